"""--select-metric: the best checkpoint is the one with the highest val mIoU or oIoU, and the run's
report says which metric chose it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uncertainty_rrsis.training import Trainer, build_arg_parser, build_trainer, config_from_args

from helpers.tiny import tiny_train_config

# made-up val scores per step: mIoU peaks at step 3, oIoU at step 6
VAL = {step: {"mIoU": m, "oIoU": o} for step, m, o in
       [(1, 0.10, 0.20), (2, 0.30, 0.25), (3, 0.50, 0.30), (4, 0.40, 0.35), (5, 0.45, 0.40), (6, 0.20, 0.60),
        (7, 0.15, 0.55), (8, 0.05, 0.10)]}


def scripted_val(trainer: Trainer) -> None:
    """Validation returns the scores of ``VAL`` at the trainer's step; every other split is evaluated for real."""
    real = trainer.evaluate

    def evaluate(split, **kwargs):
        if split == "val":
            return {**VAL[trainer.step], "count": 5}
        return real(split, **kwargs)

    trainer.evaluate = evaluate


def test_select_metric_on_the_command_line():
    parse = build_arg_parser().parse_args
    assert config_from_args(parse([])).select_metric == "mIoU"
    assert config_from_args(parse(["--select-metric", "oIoU"])).select_metric == "oIoU"
    with pytest.raises(SystemExit):
        parse(["--select-metric", "Pr@0.5"])


@pytest.mark.slow
@pytest.mark.parametrize(("metric", "step"), [("mIoU", 3), ("oIoU", 6)])
def test_the_best_checkpoint_is_chosen_by_the_select_metric(tmp_path, tiny_bert_dir, metric, step):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, eval_every=1, select_metric=metric, panels=0)
    trainer = build_trainer(cfg)
    scripted_val(trainer)
    trainer.fit()
    run = Path(cfg.output_dir)
    best = json.loads((run / "checkpoints" / "best" / "trainer_state.json").read_text())
    assert best["step"] == step and best["best_metric"] == metric and best["best_val"] == VAL[step][metric]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["checkpoint"] == f"best (val {metric})"
    assert metrics["selection"] == {"metric": metric, "split": "val", "value": VAL[step][metric], "step": step}
    last = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert (last["best_step"], last["best_metric"]) == (step, metric)


@pytest.mark.slow
def test_a_resume_keeps_the_metric_and_its_best(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, eval_every=1, select_metric="oIoU", panels=0, eval_splits="",
                            checkpoint_every=1)  # checkpoints/last after every step
    trainer = build_trainer(cfg)
    scripted_val(trainer)
    original = trainer._optimizer_step

    def crash_at_7(*args, **kwargs):
        if trainer.step == 6:
            raise RuntimeError("crash after step 6")
        return original(*args, **kwargs)

    trainer._optimizer_step = crash_at_7
    with pytest.raises(RuntimeError, match="crash after step 6"):
        trainer.fit()
    with pytest.raises(RuntimeError, match=r"select_metric: 'oIoU' -> 'mIoU'"):
        build_trainer(cfg.replace(resume=True, select_metric="mIoU")).fit()
    resumed = build_trainer(cfg.replace(resume=True))
    scripted_val(resumed)
    resumed.fit()
    assert (resumed.best, resumed.best_step) == (0.60, 6)  # steps 7 and 8 did not beat step 6's oIoU
    best = json.loads((Path(cfg.output_dir) / "checkpoints" / "best" / "trainer_state.json").read_text())
    assert best["step"] == 6


def test_a_best_chosen_by_another_metric_is_forgotten():
    from uncertainty_rrsis.training.resume import restore_best

    assert restore_best({"best_val": 0.4, "best_metric": "oIoU", "best_step": 5}, "oIoU") == (0.4, 5)
    assert restore_best({"best_val": 0.7, "best_metric": "mIoU", "best_step": 5}, "oIoU") == (None, None)
    assert restore_best({"best_val": None, "best_metric": "mIoU", "best_step": None}, "mIoU") == (None, None)


@pytest.mark.slow
def test_without_val_the_report_says_no_metric_chose_the_final_weights(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, synthetic_val=0, select_metric="oIoU", panels=0)
    build_trainer(cfg).fit()
    metrics = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    assert metrics["checkpoint"] == "final" and metrics["selection"]["metric"] is None
    assert not (Path(cfg.output_dir) / "checkpoints" / "best").exists()
