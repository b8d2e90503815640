"""Resumable training checkpoints, written atomically.

A checkpoint is a folder::

    <name>/model.safetensors    weights (from the unwrapped, uncompiled model)
    <name>/config.json          the model config (enough for ``CroBIMU.from_pretrained``)
    <name>/trainer_state.pt     optimizer, scheduler, grad scaler, RNG states (tensors and plain
                                containers only: loads with ``torch.load(weights_only=True)``)
    <name>/trainer_state.json   step, epoch, position in the epoch, best metric, train config

It is first written to ``<name>.tmp`` and then swapped in with renames, so a crash while
saving leaves the previous checkpoint intact (at worst under ``<name>.old``, which
:func:`find_checkpoint` also accepts).
"""

from __future__ import annotations

import errno
import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointWriteError",
    "save_checkpoint",
    "save_weights", "load_trainer_state", "find_checkpoint", "read_weights", "ModelSaver", "rng_state",
    "set_rng_state", "atomic_write_text",
]


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, torch (CPU) and CUDA (if initialised), as tensors / lists."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, no permission, ...); the message names the
    folder, the cause and what to do. The previous checkpoint of that name is kept."""


def _write_failure(folder: Path, err: BaseException) -> str:
    """Why writing ``folder`` failed, in words: the space left on its disk, or the operating system's reason."""
    try:
        free = shutil.disk_usage(folder.parent).free
    except OSError:
        free = None
    reason = f"{type(err).__name__}: {err}"
    if isinstance(err, PermissionError):
        cause = f"no permission to write in {folder.parent}"
    elif getattr(err, "errno", None) == errno.ENOSPC or (free is not None and free < 64 * 2**20):
        cause = ("no space left on the device" + (f" ({free / 2**20:.0f} MB free in {folder.parent})"
                                                  if free is not None else ""))
    else:
        cause = "the operating system refused the write"
    return (f"cannot write the checkpoint {folder}: {cause} ({reason}). The previous checkpoint {folder} is kept. "
            "Free some space (or choose another --output-dir), then continue the run with --resume.")


def save_checkpoint(
    folder: str | Path,
    *,
    model: Any,
    trainer_state: dict[str, Any],
    info: dict[str, Any],
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    Args:
        folder: destination, e.g. ``run/checkpoints/last``.
        model: a model with ``save_pretrained(dir)`` (unwrapped from DDP / compile by the caller
            or by ``save_pretrained`` itself).
        trainer_state: tensors and containers (optimizer / scheduler / scaler / RNG states).
        info: JSON-serialisable progress information (step, epoch, best metric, config ...).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)
        torch.save(trainer_state, tmp / "trainer_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError ("unexpected pos ...")
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(_write_failure(folder, err)) from err
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.replace(old)
    tmp.replace(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def save_weights(folder: str | Path, model: Any) -> Path:
    """Write ``model.save_pretrained`` into ``folder`` atomically (through ``<folder>.tmp``): the weights of
    a finished run, without trainer state."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    try:
        model.save_pretrained(tmp)
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(_write_failure(folder, err)) from err
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def find_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint at ``folder`` (or its ``.old`` twin after a crash mid-save), or None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "trainer_state.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


def load_trainer_state(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(trainer_state, info)`` from a checkpoint folder written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: a file of the checkpoint is missing (the message lists them).
        ValueError: a file is truncated or corrupt (the message names it).
    """
    folder = Path(folder)
    missing = [n for n in ("trainer_state.pt", "trainer_state.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete training checkpoint: missing {missing}. Expected the folder written by "
            "save_checkpoint (model.safetensors, config.json, trainer_state.pt, trainer_state.json)."
        )
    try:
        state = torch.load(folder / "trainer_state.pt", map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{folder / 'trainer_state.pt'} is truncated or corrupt and cannot be read ({err})") from err
    try:
        info = json.loads((folder / "trainer_state.json").read_text())
    except (ValueError, OSError) as err:
        raise ValueError(f"{folder / 'trainer_state.json'} is truncated or corrupt and cannot be read ({err})") from err
    return state, info


def read_weights(model: torch.nn.Module, folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``folder/model.safetensors``, checked to fit ``model`` (not loaded into it).

    Raises:
        ValueError: the file is truncated or corrupt, or its tensors do not fit the model (the
            message names the file, counts the keys and shows a few).
    """
    from ..models import LoadReport, load_state_file, strip_wrapper_prefixes

    path = Path(folder) / "model.safetensors"
    state = strip_wrapper_prefixes(load_state_file(path))
    own = model.state_dict()
    report = LoadReport(source=str(path), missing=[k for k in own if k not in state],
                        unexpected=[k for k in state if k not in own],
                        mismatched=[(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                                    if k in own and tuple(v.shape) != tuple(own[k].shape)])
    if not report.ok:
        raise ValueError(
            f"the weights in {path} do not fit the model of this run's settings:\n{report.summary(limit=3)}\n"
            "Likely cause: the checkpoint was written with other model settings (see its config.json)."
        )
    return state


class ModelSaver:
    """Saves a model with its tokenizer through ``model.save_pretrained(directory, tokenizer=...)``
    (what :func:`save_checkpoint` calls)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory, tokenizer=self.tokenizer)
