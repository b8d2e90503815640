"""The run's log: ``log.jsonl`` (one JSON record per line), TensorBoard scalars, console lines, and
the time a run spends per phase (:class:`PhaseTimes`).

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

__all__ = ["RunLog", "PhaseTimes", "TENSORBOARD_EXTRA", "tensorboard_installed"]

#: How to install TensorBoard for the run log.
TENSORBOARD_EXTRA = 'pip install "uncertainty-rrsis[tensorboard]"'


def tensorboard_installed() -> bool:
    """Whether the tensorboard package (which ``torch.utils.tensorboard`` needs) can be imported."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class RunLog:
    """Appends records to ``<folder>/log.jsonl`` and mirrors their numbers to TensorBoard.

    Args:
        folder: the run folder.
        is_main: whether this process writes (rank 0).
    """

    def __init__(self, folder: str | Path, *, is_main: bool) -> None:
        self.folder = Path(folder)
        self.is_main = bool(is_main)
        self._writer: Any = None

    def open_tensorboard(self) -> bool:
        """Start ``<folder>/tensorboard`` when the tensorboard package is installed; returns whether it did
        (True on the other ranks, which write nothing)."""
        if not self.is_main or self._writer is not None:
            return True
        try:
            from torch.utils.tensorboard import SummaryWriter
        except (ImportError, ModuleNotFoundError):
            return False
        self._writer = SummaryWriter(str(self.folder / "tensorboard"))
        return True

    def add_images(self, tag: str, paths: list[Path], *, step: int) -> None:
        """Log the pictures ``paths`` (PNG panels) to TensorBoard as ``<tag>/<file stem>`` at ``step``."""
        if self._writer is None:
            return
        import numpy as np
        from PIL import Image

        for path in paths:
            with Image.open(path) as picture:
                self._writer.add_image(f"{tag}/{Path(path).stem}", np.asarray(picture.convert("RGB")), step,
                                       dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard's writer (the log file is appended line by line and needs nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, record: dict[str, Any], *, step: int) -> None:
        """Append ``record`` as one line; its int / float values (but ``step`` and ``epoch``) go to
        TensorBoard at ``record["step"]`` (default ``step``)."""
        if not self.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._writer.add_scalar(key, value, record.get("step", step))

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
