"""The run's log: ``log.jsonl`` (one JSON record per line), mirrored to the trackers (TensorBoard,
Weights & Biases), console lines, and the time a run spends per phase (:class:`PhaseTimes`).

Only rank 0 writes and prints; on the other ranks every call does nothing, so the training
code calls it unconditionally.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .trackers import TENSORBOARD_EXTRA, TensorBoardTracker, Tracker, WandbTracker

__all__ = ["RunLog", "PhaseTimes"]


class RunLog:
    """Appends records to ``<folder>/log.jsonl`` and mirrors their numbers to the trackers it holds
    (:mod:`.trackers`: TensorBoard, Weights & Biases).

    Args:
        folder: the run folder.
        is_main: whether this process writes (rank 0).
    """

    def __init__(self, folder: str | Path, *, is_main: bool) -> None:
        self.folder = Path(folder)
        self.is_main = bool(is_main)
        self.trackers: list[Tracker] = []

    def add_tracker(self, tracker: Tracker) -> None:
        """Mirror every later record (and the panels) to ``tracker``; rank 0 only."""
        if self.is_main:
            self.trackers.append(tracker)

    def open_tensorboard(self) -> bool:
        """Start ``<folder>/tensorboard`` when the tensorboard package is installed; returns whether it did
        (True on the other ranks, which write nothing)."""
        if not self.is_main or any(isinstance(t, TensorBoardTracker) for t in self.trackers):
            return True
        try:
            tracker = TensorBoardTracker(self.folder)
        except (ImportError, ModuleNotFoundError):
            return False
        self.trackers.append(tracker)
        return True

    def open_trackers(self, cfg: Any, model_config: Any) -> None:
        """Open what the run's settings ask for (rank 0): TensorBoard (``cfg.tensorboard``; ``auto``
        says so when the package is missing) and Weights & Biases (``cfg.wandb``, with the settings)."""
        if not self.is_main:
            return
        if cfg.tensorboard is not False and not self.open_tensorboard():
            self.print(f"TensorBoard: off, the tensorboard package is not installed ({TENSORBOARD_EXTRA}); "
                       "the log is in log.jsonl")
        if cfg.wandb != "off":
            self.add_tracker(WandbTracker(self.folder, mode=cfg.wandb, project=cfg.wandb_project, resume=cfg.resume,
                                          config={"train": cfg.to_dict(), "model": model_config.to_dict()}))

    def add_images(self, tag: str, paths: list[Path], *, step: int) -> None:
        """Log the pictures ``paths`` (PNG panels) to the trackers as ``<tag>/<file stem>`` at ``step``."""
        for tracker in self.trackers:
            tracker.log_images(tag, paths, step=step)

    def close(self) -> None:
        """Flush and close the trackers (the log file is appended line by line and needs nothing)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def write(self, record: dict[str, Any], *, step: int) -> None:
        """Append ``record`` as one line; its int / float values (but ``step`` and ``epoch``) go to
        the trackers at ``record["step"]`` (default ``step``)."""
        if not self.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        numbers = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}
        if numbers:
            for tracker in self.trackers:
                tracker.log(numbers, step=record.get("step", step))

    def print(self, *args: Any) -> None:
        """``print`` on rank 0, flushed."""
        if self.is_main:
            print(*args, flush=True)


class PhaseTimes:
    """Wall seconds spent per phase of a run, for the time breakdown in ``log.jsonl`` and on the console.

    ::

        times = PhaseTimes()
        with times("steps"):
            ...
        log.print(times.summary())
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def record(self) -> dict[str, float]:
        """``{"time/<phase>": seconds, ..., "time/total": seconds since it was created}``."""
        out = {f"time/{k}": round(v, 2) for k, v in self.seconds.items()}
        out["time/total"] = round(time.perf_counter() - self.started, 2)
        return out

    def summary(self) -> str:
        total = time.perf_counter() - self.started
        other = max(total - sum(self.seconds.values()), 0.0)
        items = [*self.seconds.items(), ("other (model, tokenizer, logging)", other)]
        parts = ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f} %)" for k, v in items)
        return f"time: {total:.0f} s in all: {parts}"
