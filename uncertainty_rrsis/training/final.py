"""The final evaluation of a run: its best checkpoint on the evaluation splits, ``metrics.json``, the panels."""

from __future__ import annotations

from typing import Any

from . import evaluation
from .checkpoint import find_checkpoint, load_trainer_state, read_weights
from .distributed import read_on_main

__all__ = ["final_evaluation"]


def final_evaluation(trainer: Any) -> dict[str, Any]:
    """Evaluate ``trainer``'s best checkpoint (or the final weights without val) on ``cfg.eval_splits``.

    Rank 0 reads the best checkpoint and broadcasts its weights; the step and the validation score
    reported for it are the ones it carries (its ``trainer_state.json``), so the report describes the
    checkpoint it scored, also after a resume. Each split is evaluated as is
    and with every sentence blanked (``<split>/text_masked``); rank 0 prints the tables, writes
    ``metrics.json`` (whose ``checkpoint`` and ``selection`` say which checkpoint and which
    metric chose it) and draws the panels.
    """
    metric = trainer.cfg.select_metric
    best: dict[str, Any] | None = None
    if trainer.best is not None:  # only a best checkpoint this run (or the run it resumes) chose

        def read() -> dict[str, Any] | None:
            folder = find_checkpoint(trainer.out / "checkpoints" / "best")
            if folder is None:
                return None
            return {"weights": read_weights(trainer.model, folder), "info": load_trainer_state(folder)[1]}

        best = read_on_main(trainer.env, read, f"the best checkpoint of {trainer.out}")
    source = "final"
    selection: dict[str, Any] = {"metric": None, "split": None,
                                 "note": "no best checkpoint on val (no val split): the final weights"}
    if best is not None:
        trainer.model.load_state_dict(best["weights"], strict=True)
        value, step = best["info"].get("best_val"), best["info"].get("best_step", best["info"].get("step"))
        source = f"best (val {metric})"
        selection = {"metric": metric, "split": "val", "value": value, "step": step}
        score = f": {100 * value:.2f}" if value is not None else ""
        at = f" at step {step}" if step is not None else ""
        trainer.log.print(f"evaluating the best checkpoint by val {metric}{score}{at}")
    results: dict[str, Any] = {}
    for split in evaluation.split_names(trainer.cfg.eval_splits):
        results[split] = trainer.evaluate(split)
        results[f"{split}/text_masked"] = trainer.evaluate(split, blank_text=True, uncertainty=False)
        trainer.log.print(evaluation.format_metrics(results[split], title=f"{split} ({source} checkpoint)"))
        if results[split].get("unc_reliability"):
            trainer.log.print("predicted IoU against the actual one:\n"
                              + evaluation.format_reliability(results[split]["unc_reliability"]))
        if results[split].get("breakdown"):
            trainer.log.print(f"{split} per tag:\n" + evaluation.format_breakdown(results[split]))
        trainer.log.print(evaluation.text_cost(split, results[split], results[f"{split}/text_masked"]))
    if trainer.env.is_main:
        report = evaluation.final_report(results, checkpoint=source, image_size=trainer.model_config.image_size,
                                         seed=trainer.cfg.seed, steps=trainer.step, train_config=trainer.cfg.to_dict())
        report["selection"], report["precision"] = selection, trainer.precision
        evaluation.write_metrics(trainer.out / "metrics.json", report)
        first = next(iter(results), None)
        if first is not None and trainer.cfg.panels > 0:  # the first samples of the split: a fixed set
            split = first.split("/")[0]
            paths = evaluation.save_panels(trainer.net, trainer.datasets[split], trainer.out / "panels", split=split,
                                           count=trainer.cfg.panels, device=trainer.device,
                                           autocast_dtype=trainer.autocast_dtype)
            trainer.log.add_images(f"panels/{split}", paths, step=trainer.step)
    trainer.env.barrier()
    return results
