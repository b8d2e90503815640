"""The train / evaluate machinery on a tiny synthetic set: run folder, resume, SIGTERM, DDP, errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from uncertainty_rrsis.training import TrainConfig, Trainer, build_arg_parser, build_trainer, init_distributed
from uncertainty_rrsis.training.checkpoint import find_checkpoint

from helpers.examples import load_example
from helpers.tiny import tiny_train_config

REPO = Path(__file__).resolve().parents[2]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_short_run_writes_the_run_folder(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir)
    results = build_trainer(cfg).fit()
    run = Path(cfg.output_dir)
    for name in ("last", "best", "final"):
        assert (run / "checkpoints" / name / "model.safetensors").is_file()
        assert (run / "checkpoints" / name / "config.json").is_file()
    assert (run / "checkpoints" / "final" / "tokenizer").is_dir()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss/total" in r]
    assert [r["step"] for r in steps][-1] == 8 and all("lr" in r and "samples_per_s" in r for r in steps)
    assert any("val/mIoU" in r for r in log)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["seed"] == 3 and "IoU = 0 when" not in metrics["protocol"] and "oIoU" in metrics["protocol"]
    assert metrics["environment"]["torch"] == torch.__version__
    test = metrics["results"]["test"]
    assert test["count"] == 7 and 0 <= test["mIoU"] <= 1 and "unc/AUROC" in test
    assert "breakdown" in test and "test/text_masked" in metrics["results"]
    assert results["test"]["mIoU"] == test["mIoU"]
    assert sorted(p.name for p in (run / "panels").iterdir()) == ["test_000.png", "test_001.png"]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["batch_size"] == 4 and config["model"]["dim"] == 32


@pytest.mark.slow
def test_evaluate_script_matches_training_evaluation(tmp_path, tiny_bert_dir):
    evaluate_script = load_example("evaluate")

    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1)
    results = build_trainer(cfg).fit()
    best = Path(cfg.output_dir) / "checkpoints" / "best"
    again = evaluate_script.main([str(best), "--device", "cpu", "--no-progress", "--panels", "1",
                                  "--output-dir", str(tmp_path / "eval")])
    for key in ("oIoU", "mIoU", "Pr@0.5", "count", "unc/AUROC"):
        assert again["test"][key] == pytest.approx(results["test"][key], abs=1e-9)
    assert (tmp_path / "eval" / "eval_test.json").is_file() and (tmp_path / "eval" / "panels").is_dir()


class _KillAt:
    """Sends SIGTERM to this process right after optimizer step ``at``."""

    def __init__(self, trainer: Trainer, at: int) -> None:
        self.original = trainer._optimizer_step
        self.trainer, self.at = trainer, at

    def __call__(self, *args, **kwargs):
        out = self.original(*args, **kwargs)
        if self.trainer.step + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_equals_uninterrupted(tmp_path, tiny_bert_dir):
    straight = tiny_train_config(tmp_path / "a", tiny_bert_dir, checkpoint_every=100, eval_splits="")
    build_trainer(straight).fit()

    interrupted = tiny_train_config(tmp_path / "b", tiny_bert_dir, checkpoint_every=100, eval_splits="",
                                    cache_dir=straight.cache_dir)
    trainer = build_trainer(interrupted)
    trainer._optimizer_step = _KillAt(trainer, at=5)
    with pytest.raises(SystemExit) as stop:
        trainer.fit()
    assert stop.value.code == 143
    last = find_checkpoint(Path(interrupted.output_dir) / "checkpoints" / "last")
    assert last is not None and json.loads((last / "trainer_state.json").read_text())["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored

    interrupted.resume = True
    build_trainer(interrupted).fit()
    a = weights(Path(straight.output_dir) / "checkpoints" / "final")
    b = weights(Path(interrupted.output_dir) / "checkpoints" / "final")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _ddp_worker(rank: int, world: int, store: str, cfg_dict: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = init_distributed(device="cpu", init_method=store)
    cfg = TrainConfig(**cfg_dict)
    trainer = build_trainer(cfg, env=env)
    results = trainer.fit()
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    torch.save({"state": state, "results": results["test"]}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_gloo_training_and_exact_evaluation(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0)
    build_trainer(cfg.__class__(**{**cfg.to_dict(), "epochs": 1, "max_steps": 1,
                             "output_dir": str(tmp_path / "warm")}))  # builds the synthetic cache once
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'store'}", cfg.to_dict(), str(tmp_path)), nprocs=2,
             join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    assert r0["results"]["count"] == 7  # an odd split: every sample exactly once, none repeated
    single_cfg = TrainConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "single")})
    single = build_trainer(single_cfg)
    single.model.load_state_dict(weights(Path(cfg.output_dir) / "checkpoints" / "best"))
    expected = single.evaluate("test")
    for key in ("oIoU", "mIoU", "Pr@0.5", "Pr@0.9", "count", "unc/AUROC"):
        assert r0["results"][key] == pytest.approx(expected[key], abs=1e-9), key
        assert r1["results"][key] == pytest.approx(expected[key], abs=1e-9), key


def test_bad_data_root_is_a_clear_error(tmp_path, tiny_bert_dir):
    (tmp_path / "nodata").mkdir()
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, dataset="risbench", data_root=str(tmp_path / "nodata"))
    with pytest.raises(Exception, match=r"output_phrase_train\.txt") as info:
        build_trainer(cfg).fit()
    assert "img_rgb" in str(info.value)


@pytest.mark.slow
def test_corrupt_image_names_its_file(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir)
    trainer = build_trainer(cfg)
    root = trainer.datasets.root
    victim = sorted((root / "img_rgb").glob("train_*.png"))[0]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy)
    (copy / "img_rgb" / victim.name).write_bytes(b"not a png at all")
    bad = tiny_train_config(tmp_path, tiny_bert_dir, dataset="risbench", data_root=str(copy))
    with pytest.raises(Exception, match=victim.name):
        build_trainer(bad).fit()


def test_total_batch_must_divide():
    from uncertainty_rrsis.training import per_rank_batch

    assert per_rank_batch(32, 4, 2) == 4
    with pytest.raises(ValueError, match=r"--batch-size is the total batch.*30 does not divide by world_size \(4\)"):
        per_rank_batch(30, 4)


def test_help_documents_every_option_and_config_files(tmp_path):
    from uncertainty_rrsis.training import build_model_config, config_from_args

    text = build_arg_parser().format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
    (tmp_path / "run.yaml").write_text("lr: 0.002\nepochs: 3\nuse-fusion: false\n")
    (tmp_path / "run.toml").write_text("lr = 0.002\nepochs = 3\n")
    parser = build_arg_parser()
    cfg = config_from_args(parser.parse_args(["--config", str(tmp_path / "run.yaml"), "--epochs", "5"]))
    assert cfg.lr == 0.002 and cfg.epochs == 5 and build_model_config(cfg).use_fusion is False
    cfg = config_from_args(parser.parse_args(["--config", str(tmp_path / "run.toml")]))
    assert cfg.epochs == 3
    paper = config_from_args(parser.parse_args(["--preset", "paper", "--dataset", "rrsisd", "--data-root", "x"]))
    assert (paper.lr, paper.batch_size, paper.epochs, paper.poly_power) == (5e-5, 32, 40, 0.9)
    assert build_model_config(paper).image_size == 480
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match=r"unknown training config keys \['learning_rate'\]"):
        config_from_args(parser.parse_args(["--config", str(tmp_path / "bad.yaml")]))
    with pytest.raises(ValueError, match="needs --data-root"):
        config_from_args(parser.parse_args(["--dataset", "rrsisd"]))
