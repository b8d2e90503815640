"""The run's log: ``log.jsonl`` (one JSON record per line), TensorBoard scalars and console lines.

Only rank 0 writes and prints; on the other ranks every call does nothing, so the training
code calls it unconditionally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RunLog"]


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
        """Start ``<folder>/tensorboard`` when the tensorboard package is installed; returns whether it did."""
        if not self.is_main or self._writer is not None:
            return self._writer is not None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except (ImportError, ModuleNotFoundError):
            return False
        self._writer = SummaryWriter(str(self.folder / "tensorboard"))
        return True

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
