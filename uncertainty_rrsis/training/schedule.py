"""How long a run trains (:func:`total_steps`) and its learning-rate schedule (per-iteration polynomial decay)."""

from __future__ import annotations

import torch

__all__ = ["poly_schedule", "total_steps"]


def poly_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, power: float = 0.9, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr = base_lr * (1 - step / total_steps) ** power`` per optimizer step, after a linear warm-up.

    Each parameter group keeps its own base learning rate, so a text-encoder multiplier survives.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive; got {total_steps}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - step / total_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(*, batches_per_epoch: int, grad_accumulation: int, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of a run: ``epochs`` x steps per epoch, capped by ``max_steps`` when given.

    Raises:
        ValueError: an epoch holds fewer batches than one optimizer step needs.
    """
    per_epoch = batches_per_epoch // grad_accumulation
    if per_epoch == 0:
        raise ValueError(f"fewer training batches per epoch ({batches_per_epoch}) than --grad-accumulation "
                         f"({grad_accumulation}): not one optimizer step fits in an epoch")
    total = per_epoch * epochs
    return min(total, max_steps) if max_steps is not None else total
