"""TensorBoard does what it says: on when installed (``auto``), an error before the run folder exists when
asked for and missing, a note when off, scalars and the final panels in the event file."""

from __future__ import annotations

from pathlib import Path

import pytest

from uncertainty_rrsis.training import SettingsError, build_trainer
from uncertainty_rrsis.training import build as build_module
from uncertainty_rrsis.training import run_log as run_log_module
from uncertainty_rrsis.training.cli import build_arg_parser

from helpers.tiny import tiny_train_config


def test_the_flag_takes_auto_true_and_false():
    parser = build_arg_parser()
    assert parser.parse_args(["--tensorboard", "auto"]).tensorboard == "auto"
    assert parser.parse_args(["--tensorboard"]).tensorboard is True
    assert parser.parse_args(["--tensorboard", "false"]).tensorboard is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--tensorboard", "sometimes"])


def test_asked_for_and_missing_is_an_error_before_the_run_folder(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(build_module, "installed", lambda package: package != "tensorboard")
    config = tiny_train_config(tmp_path, tiny_bert_dir, tensorboard=True)
    with pytest.raises(SettingsError, match=r'tensorboard package is not installed: pip install "uncertainty-rrsis'
                                            r'\[tensorboard\]"'):
        build_trainer(config)
    assert not Path(config.output_dir).exists()


@pytest.mark.slow
def test_auto_without_the_package_says_so_and_trains(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    def missing(self):
        return False

    monkeypatch.setattr(run_log_module.RunLog, "open_tensorboard", missing)
    config = tiny_train_config(tmp_path, tiny_bert_dir, tensorboard="auto", epochs=1, panels=0)
    build_trainer(config).fit()
    assert "TensorBoard: off, the tensorboard package is not installed" in capsys.readouterr().out
    assert not (Path(config.output_dir) / "tensorboard").exists()


@pytest.mark.slow
def test_scalars_and_panels_reach_the_event_file(tmp_path, tiny_bert_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_train_config(tmp_path, tiny_bert_dir, tensorboard=True, epochs=1, panels=2)
    build_trainer(config).fit()
    events = EventAccumulator(str(Path(config.output_dir) / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert "loss/total" in tags["scalars"] and any(t.startswith("val/") for t in tags["scalars"])
    assert sorted(tags["images"]) == ["panels/test/test_000", "panels/test/test_001"]
