"""Errors that name the file or the folder and say what to do, outside training: truncated
checkpoints, a config that does not fit its weights, a run folder given for a checkpoint, an
empty split to evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from uncertainty_rrsis.models import CroBIMU
from uncertainty_rrsis.training import evaluate, evaluation_loader

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy or a save that did not finish


def checkpoint(tmp: Path, tiny_config, tokenizer, **train) -> Path:
    """A saved tiny model in a run folder's layout, with the data settings of a small synthetic run."""
    torch.manual_seed(0)
    folder = tmp / "run" / "checkpoints" / "best"
    CroBIMU(tiny_config).save_pretrained(folder, tokenizer=tokenizer)
    settings = {"dataset": "synthetic", "cache_dir": str(tmp / "cache"), "synthetic_train": 2, "synthetic_val": 2,
                "synthetic_test": 3, "batch_size": 2, "progress": False, "device": "cpu", **train}
    (folder / "trainer_state.json").write_text(json.dumps({"step": 3, "train_config": settings}))
    return folder


def evaluate_main(argv: list[str]):
    import evaluate as evaluate_script

    return evaluate_script.main([*argv, "--device", "cpu", "--no-progress", "--panels", "0"])


# ------------------------------------------------------------------ truncated checkpoints


def test_a_truncated_weights_file_is_named_by_from_pretrained(tmp_path, tiny_config):
    folder = CroBIMU(tiny_config).save_pretrained(tmp_path / "ckpt")
    truncate(folder / "model.safetensors")
    with pytest.raises(ValueError) as info:
        CroBIMU.from_pretrained(folder)
    message = str(info.value)
    assert str(folder / "model.safetensors") in message and "truncated or corrupt" in message


def test_a_truncated_config_is_named_by_from_pretrained(tmp_path, tiny_config):
    folder = CroBIMU(tiny_config).save_pretrained(tmp_path / "ckpt")
    truncate(folder / "config.json")
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}.*truncated or corrupt"):
        CroBIMU.from_pretrained(folder)


# ------------------------------------------------------------------ examples/evaluate.py


def test_evaluate_script_on_weights_that_do_not_fit_the_config_is_short(tmp_path, tiny_config, tiny_tokenizer):
    folder = checkpoint(tmp_path, tiny_config, tiny_tokenizer)
    data = json.loads((folder / "config.json").read_text())
    data["config"]["dim"] = 48  # edited by hand, or copied from another checkpoint
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as info:
        evaluate_main([str(folder)])
    message = str(info.value.code)
    lines = message.splitlines()
    assert len(lines) <= 8 and max(len(line) for line in lines) < 400, message
    assert str(folder) in message
    assert "Likely cause" in message and "config.json and model.safetensors" in message
    assert "shape mismatch (" in message and "more" in message  # a count and a few examples, not all


def test_evaluate_script_names_a_truncated_weights_file(tmp_path, tiny_config, tiny_tokenizer):
    folder = checkpoint(tmp_path, tiny_config, tiny_tokenizer)
    truncate(folder / "model.safetensors")
    with pytest.raises(SystemExit) as info:
        evaluate_main([str(folder)])
    message = str(info.value.code)
    assert str(folder / "model.safetensors") in message and "truncated or corrupt" in message
    assert len(message.splitlines()) <= 3


def test_evaluate_script_on_a_run_folder_points_at_its_checkpoints(tmp_path, tiny_config, tiny_tokenizer):
    folder = checkpoint(tmp_path, tiny_config, tiny_tokenizer)
    run = folder.parent.parent
    (run / "config.json").write_text(json.dumps({"train": {"seed": 0}, "model": {}, "environment": {}}))
    with pytest.raises(SystemExit) as info:
        evaluate_main([str(run)])
    message = str(info.value.code)
    assert f"{run} is a training run folder" in message and str(run / "checkpoints" / "best") in message
    assert "unknown" not in message
    with pytest.raises(ValueError, match=rf"{run} is a training run folder.*{run / 'checkpoints' / 'best'}"):
        CroBIMU.from_pretrained(run)


def test_evaluate_script_refuses_an_empty_split(tmp_path, tiny_config, tiny_tokenizer):
    folder = checkpoint(tmp_path, tiny_config, tiny_tokenizer, synthetic_test=0)
    with pytest.raises(SystemExit) as info:
        evaluate_main([str(folder)])
    message = str(info.value.code)
    assert info.value.code not in (0, None)
    assert "test" in message and ("empty" in message or "no samples" in message)
    assert not (tmp_path / "run" / "eval" / "eval_test.json").exists()  # no metrics over 0 samples


class _Constant(nn.Module):
    def forward(self, images, input_ids, text_padding_mask=None):
        return SimpleNamespace(logits=images[:, :1], uncertainty=None, refine_mask=None)


def test_evaluate_refuses_to_report_metrics_over_no_samples():
    with pytest.raises(ValueError, match=r"no samples"):
        evaluate(_Constant(), evaluation_loader([], batch_size=2), device="cpu")
