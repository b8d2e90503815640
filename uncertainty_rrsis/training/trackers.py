"""Experiment trackers the run log mirrors to: TensorBoard and Weights & Biases.

``log.jsonl`` is the record of a run; a tracker shows the same numbers in its own tool. Each has
the three calls of :class:`Tracker`, and the run log (:class:`~.run_log.RunLog`) calls every
tracker it was given:

* :class:`TensorBoardTracker`: ``<run>/tensorboard/`` (``--tensorboard``; extra ``tensorboard``).
* :class:`WandbTracker`: a Weights & Biases run in ``<run>/wandb/`` (``--wandb offline`` keeps it on
  the machine for a later ``wandb sync``, ``--wandb online`` sends it; extra ``wandb``). A resumed
  run continues the same W&B run.

Only rank 0 opens trackers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

__all__ = ["TENSORBOARD_EXTRA", "WANDB_EXTRA", "WANDB_MODES", "TensorBoardTracker", "Tracker", "WandbTracker",
           "installed"]

#: How to install each tracker's package.
TENSORBOARD_EXTRA = 'pip install "uncertainty-rrsis[tensorboard]"'
WANDB_EXTRA = 'pip install "uncertainty-rrsis[wandb]"'
#: ``--wandb`` values: no W&B run, a local run, a run sent to the W&B server.
WANDB_MODES = ("off", "offline", "online")


def installed(package: str) -> bool:
    """Whether ``package`` (``"tensorboard"``, ``"wandb"``) can be imported."""
    return importlib.util.find_spec(package) is not None


class Tracker(Protocol):
    """What the run log asks of a tracker."""

    def log(self, values: Mapping[str, float], *, step: int) -> None:
        """Record scalars (``loss/total``, ``val/mIoU``, ...) at an optimizer step."""

    def log_images(self, tag: str, paths: Sequence[Path], *, step: int) -> None:
        """Record pictures (the PNG panels) as ``<tag>/<file stem>``."""

    def close(self) -> None:
        """Flush and finish."""


class TensorBoardTracker:
    """TensorBoard event files in ``<folder>/tensorboard``."""

    def __init__(self, folder: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(folder) / "tensorboard"))

    def log(self, values: Mapping[str, float], *, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_images(self, tag: str, paths: Sequence[Path], *, step: int) -> None:
        import numpy as np
        from PIL import Image

        for path in paths:
            with Image.open(path) as picture:
                self.writer.add_image(f"{tag}/{Path(path).stem}", np.asarray(picture.convert("RGB")), step,
                                      dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run in ``<folder>/wandb``, named after the run folder.

    Args:
        folder: the run folder.
        mode: ``"offline"`` or ``"online"``.
        project: the W&B project.
        config: the run's settings, shown with the run (the training settings and the model config).
        resume: continue the W&B run this folder started (its id is kept in ``wandb/run_id``).
    """

    def __init__(self, folder: str | Path, *, mode: str, project: str, config: Mapping[str, Any],
                 resume: bool = False) -> None:
        if mode not in WANDB_MODES[1:]:
            raise ValueError(f"WandbTracker: mode must be offline or online; got {mode!r}")
        import wandb

        self._wandb = wandb
        folder = Path(folder)
        id_file = folder / "wandb" / "run_id"
        run_id = id_file.read_text(encoding="utf-8").strip() if resume and id_file.is_file() else None
        id_file.parent.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(mode=cast(Any, mode), project=project, name=folder.resolve().name, dir=str(folder),
                              config=dict(config), id=run_id, resume="allow" if run_id else None)
        id_file.write_text(self.run.id, encoding="utf-8")

    def log(self, values: Mapping[str, float], *, step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_images(self, tag: str, paths: Sequence[Path], *, step: int) -> None:
        self.run.log({f"{tag}/{Path(p).stem}": self._wandb.Image(str(p)) for p in paths}, step=step)

    def close(self) -> None:
        self.run.finish()
