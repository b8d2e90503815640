"""--resume continues the run it finds: settings that change the result must match (or be accepted
with --resume-with-changes, which records them), bookkeeping may change, config.json keeps the
settings the run started with."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from uncertainty_rrsis.training import build_trainer

from helpers.tiny import tiny_train_config


def log_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupted_run(tmp: Path, bert_dir: Path, at: int = 3, **changes):
    """A run of 8 steps stopped by SIGTERM after step ``at`` (its checkpoints/last is at that step)."""
    cfg = tiny_train_config(tmp, bert_dir, eval_splits="", checkpoint_every=100, **changes)
    trainer = build_trainer(cfg)
    original = trainer._optimizer_step

    def step(*args, **kwargs):
        out = original(*args, **kwargs)
        if trainer.step + 1 == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer._optimizer_step = step
    with pytest.raises(SystemExit):
        trainer.fit()
    return cfg


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_keeps_the_run(tmp_path, tiny_bert_dir):
    cfg = interrupted_run(tmp_path, tiny_bert_dir)
    run = Path(cfg.output_dir)
    before = files(run)
    changed = cfg.replace(resume=True, batch_size=8, synthetic_train=24, seed=4)
    with pytest.raises(RuntimeError) as info:
        build_trainer(changed).fit()
    message = str(info.value)
    for line in ("batch_size: 4 -> 8", "synthetic_train: 16 -> 24", "seed: 3 -> 4"):
        assert line in message, message
    assert str(run) in message and "--resume-with-changes" in message and "--output-dir" in message
    assert files(run) == before  # config.json, the log and the checkpoints untouched

    with pytest.raises(RuntimeError, match=r"model\.decoder\.num_layers: 1 -> 2"):
        build_trainer(cfg.replace(resume=True, model={"decoder": {"num_layers": 2}})).fit()
    assert files(run) == before


@pytest.mark.slow
def test_resume_accepts_bookkeeping_changes_and_keeps_config_json(tmp_path, tiny_bert_dir):
    cfg = interrupted_run(tmp_path, tiny_bert_dir)
    run = Path(cfg.output_dir)
    config = (run / "config.json").read_bytes()
    build_trainer(cfg.replace(resume=True, log_every=1, checkpoint_every=5, panels=0, eval_splits="test",
                        progress=False, device="cpu")).fit()
    assert (run / "config.json").read_bytes() == config
    assert json.loads((run / "metrics.json").read_text())["results"]["test"]["count"] == 7
    steps = [r["step"] for r in log_records(run) if "loss/total" in r]
    assert steps[-5:] == [4, 5, 6, 7, 8]  # log_every 1 after the resume
    resumed = [r for r in log_records(run) if r.get("event") == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == 3 and "changes" not in resumed[0]


@pytest.mark.slow
def test_resume_with_changes_continues_with_them_and_records_them(tmp_path, tiny_bert_dir, capsys):
    cfg = interrupted_run(tmp_path, tiny_bert_dir)
    run = Path(cfg.output_dir)
    config = (run / "config.json").read_bytes()
    capsys.readouterr()
    build_trainer(cfg.replace(resume=True, resume_with_changes=True, lr=2e-3, log_every=1)).fit()
    out = capsys.readouterr().out
    assert "lr: 0.001 -> 0.002" in out
    records = log_records(run)
    resumed = [r for r in records if r.get("event") == "resumed"]
    assert resumed == [{"event": "resumed", "step": 3, "changes": {"lr": [0.001, 0.002]},
                        "from": str(run / "checkpoints" / "last"), "time": resumed[0]["time"]}]
    lr_after = {r["step"]: r["lr"] for r in records if "loss/total" in r and r["step"] > 3}
    for step, lr in lr_after.items():  # the new peak learning rate, on the run's schedule
        assert lr == pytest.approx(2e-3 * (1 - step / 8) ** 0.9, rel=1e-9), step
    assert (run / "config.json").read_bytes() == config  # the settings the run started with
    assert json.loads(config)["train"]["lr"] == 0.001
    # the checkpoint holds the accepted settings: resuming again with them needs no flag
    build_trainer(cfg.replace(resume=True, lr=2e-3)).fit()
    with pytest.raises(RuntimeError, match=r"lr: 0\.002 -> 0\.001"):
        build_trainer(cfg.replace(resume=True)).fit()


@pytest.mark.slow
def test_resume_without_a_checkpoint_compares_with_config_json(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, eval_splits="")
    trainer = build_trainer(cfg)

    def crash(*args, **kwargs):
        raise RuntimeError("crashed before the first checkpoint")

    trainer._optimizer_step = crash
    with pytest.raises(RuntimeError, match="crashed before"):
        trainer.fit()
    run = Path(cfg.output_dir)
    assert (run / "config.json").is_file() and not (run / "checkpoints").exists()
    with pytest.raises(RuntimeError, match=r"seed: 3 -> 5"):
        build_trainer(cfg.replace(resume=True, seed=5)).fit()
    build_trainer(cfg.replace(resume=True)).fit()  # the same settings: starts from scratch in its folder
    assert (run / "checkpoints" / "final").is_dir()
