"""Learning-rate schedule of the LAVT family: per-iteration polynomial decay."""

from __future__ import annotations

import torch

__all__ = ["poly_schedule"]


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
