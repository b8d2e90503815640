"""Errors that name the file or the folder and say what to do: truncated checkpoints (loading
weights, resuming, evaluating), a config that does not fit its weights, a run folder given for a
checkpoint, an empty or too small training split, an empty split to evaluate."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from uncertainty_rrsis.models import CroBIMU
from uncertainty_rrsis.training import build_trainer, evaluate, evaluation_loader
from uncertainty_rrsis.training.checkpoint import read_weights

from helpers.examples import load_example
from helpers.tiny import tiny_train_config


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
    evaluate_script = load_example("evaluate")

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


# ------------------------------------------------------------------ truncated checkpoints


def test_the_trainer_names_a_truncated_weights_file(tmp_path, tiny_bert_dir, tiny_config):
    folder = CroBIMU(tiny_config).save_pretrained(tmp_path / "ckpt")
    truncate(folder / "model.safetensors")
    trainer = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir))
    with pytest.raises(ValueError, match=rf"{folder / 'model.safetensors'}.*truncated or corrupt"):
        trainer.model.load_state_dict(read_weights(trainer.model, folder))


@pytest.mark.slow
def test_resume_from_a_truncated_checkpoint_names_it_and_the_way_out(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, panels=0, eval_splits="")
    build_trainer(cfg).fit()
    run = Path(cfg.output_dir)
    last, best = run / "checkpoints" / "last", run / "checkpoints" / "best"
    truncate(last / "model.safetensors")
    resumed = cfg.replace(resume=True)
    with pytest.raises(RuntimeError) as info:
        build_trainer(resumed).fit()
    message = str(info.value)
    assert str(last / "model.safetensors") in message and "truncated or corrupt" in message
    best_step = json.loads((best / "trainer_state.json").read_text())["step"]
    assert f"{best} (step {best_step})" in message and "--overwrite" in message
    assert not (run / ".lock").exists()

    shutil.rmtree(last)  # the way out the message gives: continue from the best checkpoint
    shutil.copytree(best, last)
    trainer = build_trainer(resumed)
    trainer.fit()
    resumes = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumes if r.get("event") == "resumed"] == [best_step]

    (last / "trainer_state.json").write_text('{"step": 8, "epo')
    with pytest.raises(RuntimeError, match=rf"{last / 'trainer_state.json'}.*truncated or corrupt"):
        build_trainer(resumed).fit()


# ------------------------------------------------------------------ empty or too small splits in training


def test_an_empty_training_split_says_so(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, synthetic_train=0)
    with pytest.raises(ValueError) as info:
        build_trainer(cfg).fit()
    message = str(info.value)
    assert "train" in message and ("empty" in message or "no samples" in message), message
    assert "lower --batch-size" not in message
    assert not (Path(cfg.output_dir) / "config.json").exists()  # nothing that would block the next start


def test_a_training_split_smaller_than_one_batch_gives_the_numbers(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, synthetic_train=3)
    with pytest.raises(ValueError) as info:
        build_trainer(cfg)  # refused while the run is built: nothing is written
    message = str(info.value)
    assert "3 samples" in message and "--batch-size 4" in message and str(tmp_path / "cache") in message, message
    assert not (Path(cfg.output_dir) / "config.json").exists()


def test_an_empty_evaluation_split_is_refused_before_training(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, synthetic_test=0)
    with pytest.raises(ValueError) as info:
        build_trainer(cfg).fit()
    message = str(info.value)
    assert "--eval-splits" in message and "test" in message and ("empty" in message or "no samples" in message)
    assert not (Path(cfg.output_dir) / "config.json").exists()


@pytest.mark.slow
def test_a_missing_evaluation_split_is_refused_before_training(tmp_path, tiny_bert_dir):
    root = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir)).datasets.root
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "output_phrase_test.txt").unlink()
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, dataset="risbench", data_root=str(copy))
    with pytest.raises(ValueError) as info:
        build_trainer(cfg).fit()
    message = str(info.value)
    assert "--eval-splits" in message and "output_phrase_test.txt" in message
    assert not (Path(cfg.output_dir) / "config.json").exists()


# ------------------------------------------------------------------ settings checked before anything is written


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-0.001"], r"--lr must be > 0; got -0.001"),
        (["--lr", "nan"], r"--lr must be a finite number; got nan"),
        (["--lr", "inf"], r"--lr must be a finite number; got inf"),
        (["--max-steps", "0"], r"--max-steps must be >= 1; got 0"),
        (["--weight-decay", "-1"], r"--weight-decay must be >= 0; got -1"),
        (["--unc-hard-iou-threshold", "1.5"], r"--unc-hard-iou-threshold must be in \[0, 1\]; got 1.5"),
    ],
)
def test_a_setting_out_of_range_is_refused_before_the_run_folder_exists(tmp_path, capsys, flags, message):
    train = load_example("train")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train.main([*flags, "--output-dir", str(out)])
    assert info.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not out.exists()  # the corrected command into the same folder is not blocked


def test_a_value_of_the_wrong_type_in_a_config_file_names_its_key(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("batch-size: four\nlr: 0.001\n")
    with pytest.raises(SystemExit):
        load_example("train").main(["--config", str(tmp_path / "run.yaml"), "--output-dir", str(tmp_path / "run")])
    assert "--batch-size must be a whole number; got 'four' (str)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the report describes the checkpoint it scored


@pytest.mark.slow
def test_after_a_resume_metrics_json_describes_the_best_checkpoint_it_scored(tmp_path, tiny_bert_dir):
    """A run killed right after writing a best checkpoint newer than its resumable one: the resumable
    checkpoint still remembers an older, lower best. The report must name the checkpoint it scores."""
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, panels=0, eval_every=2, checkpoint_every=100)
    build_trainer(cfg).fit()
    run = Path(cfg.output_dir)
    best = json.loads((run / "checkpoints" / "best" / "trainer_state.json").read_text())
    last_state = run / "checkpoints" / "last" / "trainer_state.json"
    last = json.loads(last_state.read_text())
    last.update(best_val=best["best_val"] / 2, best_step=1)  # what the older resumable checkpoint would say
    last_state.write_text(json.dumps(last))
    resumed = build_trainer(cfg.replace(resume=True))
    resumed.fit()
    assert (resumed.best, resumed.best_step) == (best["best_val"], best["best_step"])
    selection = json.loads((run / "metrics.json").read_text())["selection"]
    assert (selection["value"], selection["step"]) == (best["best_val"], best["best_step"])


def test_a_full_disk_while_writing_a_checkpoint_names_the_space_and_the_path(tmp_path, monkeypatch):
    from uncertainty_rrsis.training import checkpoint as ckpt

    class Model:
        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.safetensors").write_text("weights")

    folder = tmp_path / "checkpoints" / "last"
    ckpt.save_checkpoint(folder, model=Model(), trainer_state={"step": torch.tensor(1)}, info={"step": 1})

    def full(*args, **kwargs):  # what torch.save says when the disk fills up half-way through
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 2054272 vs 2054160")

    monkeypatch.setattr(ckpt.torch, "save", full)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        ckpt.save_checkpoint(folder, model=Model(), trainer_state={"step": torch.tensor(2)}, info={"step": 2})
    message = str(info.value)
    assert f"cannot write the checkpoint {folder}: no space left on the device (0 MB free in" in message
    assert "unexpected pos" in message and "--resume" in message and "previous checkpoint" in message
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 1  # the previous one is kept
    assert not folder.with_name("last.tmp").exists()
    monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(ckpt.CheckpointWriteError, match=r"no permission to write in .*checkpoints"):
        ckpt.save_checkpoint(folder, model=Model(), trainer_state={}, info={"step": 3})


def test_an_error_of_a_script_body_reaches_torchruns_error_file(tmp_path, monkeypatch):
    """Under torchrun the failing rank's exception and traceback are written where torchrun reads them."""
    import json

    from uncertainty_rrsis.training import main_guard

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))

    def body():
        raise ValueError("the data root holds no split")

    with pytest.raises(ValueError, match="no split"):
        main_guard(body)
    recorded = json.loads(error_file.read_text())["message"]
    assert "ValueError: the data root holds no split" in recorded["message"]
    assert "body" in recorded["extraInfo"]["py_callstack"]
