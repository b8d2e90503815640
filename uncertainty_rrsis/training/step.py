"""One optimizer step of a :class:`~uncertainty_rrsis.training.Trainer`: accumulate, check, clip, step.

The loss is checked before the step: a non-finite loss (or, without a gradient scaler, a
non-finite gradient norm) on any rank, agreed on with one ``all_reduce``, raises
``FloatingPointError`` on every rank and no rank steps. With fp16's gradient scaler the loss is
scaled, the gradients are unscaled before clipping, and a step whose gradients hold inf or NaN is
skipped by the scaler (which then lowers its scale): that is the normal course of fp16 training,
not an error. The scheduler advances either way.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .distributed import DistEnv
from .evaluation import forward_batch

__all__ = ["optimizer_step", "check_finite"]


def optimizer_step(trainer: Any, micro: list[dict[str, Any]], optimizer, scheduler) -> dict[str, float]:
    """One optimizer step of ``trainer`` over the micro-batches ``micro``; returns the loss parts
    (means over the micro-batches) and, with clipping, ``grad_norm``.

    ``trainer`` provides ``net`` (the model as trained: DDP / compiled), ``model`` (unwrapped),
    ``criterion``, ``cfg``, ``env``, ``device``, ``autocast_dtype``, ``scaler`` and ``step``.
    """
    cfg, scaler = trainer.cfg, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1 or not isinstance(trainer.net, DistributedDataParallel)
        with contextlib.nullcontext() if sync else trainer.net.no_sync():
            out = forward_batch(trainer.net, batch, device=trainer.device, autocast_dtype=trainer.autocast_dtype)
            target = batch["mask"].to(trainer.device, non_blocking=True)
            loss = trainer.criterion(out, target, step=trainer.step)
            part = loss.total / len(micro)
            (scaler.scale(part) if scaler is not None else part).backward()
        for k, v in loss.as_floats().items():
            sums[k] = sums.get(k, 0.0) + v / len(micro)
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip (and report) the true gradients
    if cfg.grad_clip:
        sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.grad_clip))
    check_finite(trainer.env, {k: v for k, v in sums.items() if scaler is None or k != "grad_norm"}, sums,
                 step=trainer.step, device=trainer.device)
    if scaler is not None:
        scaler.step(optimizer)  # skipped when the unscaled gradients hold inf / NaN
        scaler.update()
        with warnings.catch_warnings():  # a step the scaler skipped still counts in the schedule
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                    category=UserWarning)
            scheduler.step()
    else:
        optimizer.step()
        scheduler.step()
    return sums


def check_finite(env: DistEnv, checked: Mapping[str, float], parts: Mapping[str, float], *, step: int,
                 device: torch.device) -> None:
    """Raise ``FloatingPointError`` on every rank when a value of ``checked`` is not finite on any rank.

    ``step`` is the number of steps made so far (the failed one is ``step + 1``); ``parts`` are shown.
    """
    bad = not all(math.isfinite(v) for v in checked.values())
    ranks = [env.rank] if bad else []
    if env.distributed and dist.is_initialized():
        flags = torch.zeros(env.world_size, device=device)
        flags[env.rank] = float(bad)
        dist.all_reduce(flags)  # one collective: every rank learns which ranks saw a non-finite loss
        ranks = [r for r, flag in enumerate(flags.tolist()) if flag > 0]
    if not ranks:
        return
    where = f" on rank(s) {ranks}" if env.distributed else ""
    shown = ", ".join(f"{k}={v:.6g}" for k, v in parts.items())
    own = " (this rank's parts, which are finite)" if env.rank not in ranks else ""
    raise FloatingPointError(
        f"non-finite loss at optimizer step {step + 1}{where}: {shown}{own}. The step was not applied: the "
        f"model holds the weights after step {step}. Resume from the last checkpoint with a lower --lr, "
        "gradient clipping (--grad-clip), or --precision fp32."
    )
