"""Stopping on SIGTERM / SIGINT (Ctrl-C, cluster preemption) at the end of the current step.

::

    with StopOnSignal() as stop:
        for step in ...:
            train_one_step()
            if stop.requested(env):      # every rank agrees (one all_reduce under DDP)
                save_checkpoint(); raise SystemExit(143)
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import torch
import torch.distributed as dist

from .distributed import DistEnv

__all__ = ["StopOnSignal"]


class StopOnSignal:
    """A context manager: inside it the signals only set a flag; the previous handlers come back on exit.

    Args:
        signals: the signals to catch (default SIGTERM and SIGINT).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = tuple(signals)
        self.flag = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __enter__(self) -> StopOnSignal:
        for sig in self.signals:
            with contextlib.suppress(ValueError):  # not in the main thread: leave the handler alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def requested(self, env: DistEnv) -> bool:
        """True when a signal arrived on this rank or, under DDP, on any rank (call it on every rank)."""
        flag = self.flag
        if env.distributed:
            t = torch.tensor([1.0 if flag else 0.0], device=env.device)
            dist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag
