"""Errors of a training run that name the file or the folder and say what to do: a truncated
checkpoint (loading weights, resuming), an empty or too small training split, an empty split to
evaluate at the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from uncertainty_rrsis.models import CroBIMU
from uncertainty_rrsis.training import build_trainer

from helpers.tiny import tiny_train_config


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy or a save that did not finish


# ------------------------------------------------------------------ truncated checkpoints


def test_the_trainer_names_a_truncated_weights_file(tmp_path, tiny_bert_dir, tiny_config):
    folder = CroBIMU(tiny_config).save_pretrained(tmp_path / "ckpt")
    truncate(folder / "model.safetensors")
    trainer = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir))
    with pytest.raises(ValueError, match=rf"{folder / 'model.safetensors'}.*truncated or corrupt"):
        trainer.load_weights(folder)


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
