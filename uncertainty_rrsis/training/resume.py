"""Resuming a run: its resumable checkpoint read on rank 0 and loaded into the model, the optimizer,
the scheduler, the gradient scaler and the RNGs of every rank, and its progress restored.

Whether a run may resume at all (the settings it was started with against the new ones) is decided
before, by :func:`~.run_folder.claim_run_folder`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint import find_checkpoint, load_trainer_state, read_weights, set_rng_state
from .distributed import read_on_main
from .lock import RunFolderError
from .run_folder import way_out

__all__ = ["resume", "restore_best"]


def _read_resume_state(trainer: Any) -> dict[str, Any] | None:
    """Rank 0: the resumable checkpoint's weights, trainer state and progress, or None without one; and
    the progress the best checkpoint carries (it may be newer than the resumable one)."""
    folder = find_checkpoint(trainer.out / "checkpoints" / "last")
    if folder is None:
        return None
    try:
        weights = read_weights(trainer.model, folder)
        state, info = load_trainer_state(folder)
    except (ValueError, OSError) as err:
        raise RunFolderError(f"cannot resume the run in {trainer.out} from {folder}: {err}\n"
                             f"{way_out(trainer.out, folder)}") from err
    best_info = None
    best = find_checkpoint(trainer.out / "checkpoints" / "best")
    if best is not None:
        try:
            best_info = json.loads((best / "trainer_state.json").read_text())
        except (ValueError, OSError):  # unreadable: the final evaluation will say so; the run can go on
            best_info = None
    return {"folder": str(folder), "weights": weights, "state": state, "info": info, "best_info": best_info}


def resume(trainer: Any, optimizer, scheduler, accepted: Mapping[str, tuple[Any, Any]]) -> bool:
    """Continue ``trainer``'s run from ``checkpoints/last``; returns whether there was one to continue.

    ``accepted`` are the setting changes ``--resume-with-changes`` let through (recorded in the
    log); with them, the optimizer takes the current learning rates and weight decay.
    """
    loaded = read_on_main(trainer.env, lambda: _read_resume_state(trainer),
                          f"the resumable checkpoint of {trainer.out}")
    record: dict[str, Any] = {"event": "resumed", "time": time.time()}
    if accepted:
        record["changes"] = {name: list(pair) for name, pair in accepted.items()}
    if loaded is None:
        trainer.log.print(
            f"--resume: no checkpoint under {trainer.out / 'checkpoints' / 'last'}; starting from scratch"
        )
        if accepted:
            trainer.log.write({**record, "step": 0, "from": None}, step=0)
        return False
    folder, state, info = Path(loaded["folder"]), loaded["state"], loaded["info"]
    trainer.model.load_state_dict(loaded["weights"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.cfg.resume_with_changes:
        _apply_optimizer_settings(trainer, optimizer, scheduler)
    set_rng_state(state["rng"])
    trainer.step, trainer.epoch, trainer.batches_done = info["step"], info["epoch"], info["batches_done"]
    # the best checkpoint on disk carries its own score; it may be newer than the resumable checkpoint
    trainer.best, trainer.best_step = restore_best(loaded["best_info"] or info, trainer.cfg.select_metric,
                                                   log=trainer.log)
    trainer.log.print(f"resumed from {folder} at step {trainer.step} (epoch {trainer.epoch}, batch "
                      f"{trainer.batches_done})")
    trainer.log.write({**record, "step": trainer.step, "from": str(folder)}, step=trainer.step)
    return True


def restore_best(info: Mapping[str, Any], select_metric: str, *, log: Any = None) -> tuple[float | None, int | None]:
    """``(best score, its step)`` from a checkpoint's progress; ``(None, None)`` when it was chosen by
    another metric than ``select_metric`` (the next validation then sets the best checkpoint)."""
    best, metric = info.get("best_val"), info.get("best_metric")
    if best is not None and metric != select_metric:
        if log is not None:
            log.print(f"the run's best checkpoint was chosen by val {metric}; this run chooses by val {select_metric}, "
                      "so the next validation sets the best checkpoint")
        return None, None
    return best, (info.get("best_step") if best is not None else None)


def _apply_optimizer_settings(trainer: Any, optimizer, scheduler) -> None:
    """After loading the optimizer and scheduler states: the learning rates and weight decay of the
    current settings (the states hold the run's), on the run's position in the schedule."""
    groups = trainer.model.param_groups(trainer.cfg.lr)
    if len(groups) != len(optimizer.param_groups):
        return
    scheduler.base_lrs = [group["lr"] for group in groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)
        group["weight_decay"] = trainer.cfg.weight_decay
