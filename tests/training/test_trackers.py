"""The run log's trackers: one small interface, TensorBoard and Weights & Biases behind it, W&B off by
default, an error before the run folder when it is asked for and missing, and an offline W&B run that
holds the scalars and the panels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncertainty_rrsis.training import SettingsError, TrainConfig, build_trainer
from uncertainty_rrsis.training import build as build_module
from uncertainty_rrsis.training.cli import build_arg_parser
from uncertainty_rrsis.training.run_log import RunLog
from uncertainty_rrsis.training.trackers import WandbTracker

from helpers.tiny import tiny_train_config


class Recorder:
    def __init__(self):
        self.calls = []

    def log(self, values, *, step):
        self.calls.append(("log", dict(values), step))

    def log_images(self, tag, paths, *, step):
        self.calls.append(("images", tag, [Path(p).name for p in paths], step))

    def close(self):
        self.calls.append(("close",))


def test_the_run_log_mirrors_numbers_to_every_tracker(tmp_path):
    log, other_rank = RunLog(tmp_path, is_main=True), RunLog(tmp_path / "r1", is_main=False)
    a, b, c = Recorder(), Recorder(), Recorder()
    log.add_tracker(a)
    log.add_tracker(b)
    other_rank.add_tracker(c)
    log.write({"step": 7, "epoch": 1, "loss/total": 0.5, "lr": 1e-4, "event": "x", "flag": True}, step=3)
    log.add_images("panels/test", [tmp_path / "test_000.png"], step=7)
    log.close()
    log.close()  # a second close does nothing
    expected = [("log", {"loss/total": 0.5, "lr": 1e-4}, 7), ("images", "panels/test", ["test_000.png"], 7),
                ("close",)]
    assert a.calls == expected and b.calls == expected and c.calls == []
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 1  # log.jsonl stays the record


def test_wandb_is_off_by_default_and_takes_three_modes():
    assert TrainConfig().wandb == "off"
    parser = build_arg_parser()
    assert parser.parse_args(["--wandb", "offline"]).wandb == "offline"
    with pytest.raises(SystemExit):
        parser.parse_args(["--wandb", "sometimes"])
    with pytest.raises(ValueError, match="--wandb must be one of off, offline, online"):
        TrainConfig(wandb="yes").validate()


def test_wandb_asked_for_and_missing_is_an_error_before_the_run_folder(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(build_module, "installed", lambda package: package != "wandb")
    config = tiny_train_config(tmp_path, tiny_bert_dir, wandb="offline")
    with pytest.raises(SettingsError, match=r'wandb package is not installed: pip install "uncertainty-rrsis\[wandb'):
        build_trainer(config)
    assert not Path(config.output_dir).exists()


def offline_run(folder: Path) -> Path:
    (run,) = (folder / "wandb").glob("offline-run-*")
    return run


def run_records(run: Path, *needles: bytes, timeout: float = 60.0) -> bytes:
    """The bytes of the offline run's ``.wandb`` record files once they hold every one of ``needles``
    (W&B's service process writes them after the run has finished, on a busy machine a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        data = b"".join(p.read_bytes() for p in run.glob("*.wandb"))
        if all(n in data for n in needles) or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_an_offline_wandb_run_holds_the_scalars_and_the_panels(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "run"
    panel = tmp_path / "test_000.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(panel)
    tracker = WandbTracker(folder, mode="offline", project="tests", config={"train": {"lr": 1e-4}})
    log = RunLog(folder, is_main=True)
    log.add_tracker(tracker)
    for step in range(1, 4):
        log.write({"step": step, "loss/total": 1.0 / step}, step=step)
    log.add_images("panels/test", [panel], step=3)
    run_id = tracker.run.id
    log.close()
    run = offline_run(folder)
    assert (run / f"run-{run_id}.wandb").is_file()
    data = run_records(run, b"loss/total", b"lr")
    assert b"loss/total" in data and b"lr" in data  # the scalars and the settings
    assert list((run / "files" / "media" / "images" / "panels" / "test").glob("test_000*.png"))
    assert (folder / "wandb" / "run_id").read_text() == run_id

    again = WandbTracker(folder, mode="offline", project="tests", config={}, resume=True)
    assert again.run.id == run_id  # a resumed training continues its W&B run
    again.close()
    with pytest.raises(ValueError, match="mode must be offline or online"):
        WandbTracker(folder, mode="off", project="tests", config={})


@pytest.mark.slow
def test_a_training_run_logs_to_wandb_offline(tmp_path, tiny_bert_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_train_config(tmp_path, tiny_bert_dir, wandb="offline", tensorboard=False, epochs=1, panels=2)
    build_trainer(config).fit()
    run = offline_run(Path(config.output_dir))
    data = run_records(run, b"loss/total", b"val/mIoU")
    assert b"loss/total" in data and b"val/mIoU" in data
    assert len(list((run / "files" / "media" / "images" / "panels" / "test").glob("*.png"))) == 2
