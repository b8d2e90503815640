"""Checkpoint helpers: safetensors / JSON files, key-prefix stripping, load reports.

One place for the file formats of the reference model: weights are safetensors (never a
pickle of Python objects), configs are JSON. Keys are stripped of the prefixes that
``DistributedDataParallel`` (``module.``) and ``torch.compile`` (``_orig_mod.``) add, so a
checkpoint always describes the unwrapped, uncompiled model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "LoadReport",
    "WEIGHTS_NAME",
    "WRAPPER_PREFIXES",
    "load_state_file",
    "match_state",
    "read_json",
    "run_folder_message",
    "save_safetensors",
    "strip_wrapper_prefixes",
    "unwrap_model",
    "write_json",
]

#: The files of a checkpoint folder: the weights and the model config.
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Prefixes added by DDP / FSDP-style wrappers (``module.``) and ``torch.compile`` (``_orig_mod.``)."""

_NESTED_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state", "module", "teacher", "net")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
            continue
        return model


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove leading ``module.`` (DDP) and every ``_orig_mod.`` (``torch.compile``) component from each key.

    Raises:
        ValueError: two keys become the same key.
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key.replace("_orig_mod.", "")
        while new.startswith("module."):
            new = new[len("module.") :]
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r} after removing wrapper prefixes.")
        out[new] = value
    return out


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    """Repeatedly remove any of ``prefixes`` from the start of each key (keys without one stay)."""
    prefixes = tuple(p for p in prefixes if p)
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if new.startswith(p):
                    new = new[len(p) :]
                    changed = True
        out.setdefault(new, value)
    return out


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def load_state_file(path: str | Path, *, nested_keys: Iterable[str] = _NESTED_KEYS) -> dict[str, torch.Tensor]:
    """Read a weights file (``.safetensors``, or a ``torch.save`` file such as ``.pth`` / ``.pt`` / ``.bin``).

    Torch files load with ``weights_only=True`` (no arbitrary code). A checkpoint that nests its
    weights under ``state_dict`` / ``model`` / ... (training checkpoints, EMA teachers) is
    unwrapped; non-tensor entries are dropped.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file cannot be read (truncated or corrupt: the message names it), or
            holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise ValueError(_unreadable(path, err)) from err
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as err:  # a torch.save zip or pickle cut short
        raise ValueError(_unreadable(path, err)) from err
    nested_keys = tuple(nested_keys)
    while isinstance(obj, Mapping) and not _tensor_dict(obj):
        inner = next((obj[k] for k in nested_keys if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not _tensor_dict(obj):
        kind = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path}: found no tensors (top-level keys / type: {kind}). Expected a state dict, possibly nested "
            f"under one of {list(nested_keys)}."
        )
    return _tensor_dict(obj)


def _unreadable(path: Path, err: BaseException) -> str:
    detail = str(err).split(". ")[0]
    return (f"{path} is truncated or corrupt and cannot be read ({detail}; {path.stat().st_size:,} bytes). A copy, "
            "download or save that did not finish (a full disk, a killed process) leaves such a file: copy it again "
            "from where it came from, or use another checkpoint.")


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, *, metadata: Mapping[str, str] | None = None
) -> None:
    """Write tensors to a safetensors file (copies to contiguous CPU tensors; shared storage is cloned)."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        t = value.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if t.numel() and ident in seen:
            t = t.clone()
        seen.add(ident)
        tensors[key] = t
    save_file(tensors, str(path), metadata=dict(metadata) if metadata else None)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with a trailing newline."""
    Path(path).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass
class LoadReport:
    """What a weight load did. ``str(report)`` gives a readable summary.

    Attributes:
        loaded: target keys that received a tensor.
        missing: target keys that received nothing (they keep their current values).
        unexpected: source keys that matched no target key (source names, after unwrapping).
        mismatched: ``(key, source_shape, target_shape)`` for names that matched with another shape.
        source: where the weights came from (a path), for messages.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        """True when every target key was loaded and no source key was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, *, limit: int = 10) -> str:
        """A multi-line summary listing up to ``limit`` keys per category."""

        def _list(items: list[Any]) -> str:
            shown = ", ".join(str(i) for i in items[:limit])
            more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
            return f"[{shown}{more}]"

        lines = [f"loaded {len(self.loaded)} tensors" + (f" from {self.source}" if self.source else "")]
        if self.missing:
            lines.append(f"missing ({len(self.missing)}, kept their initial values): {_list(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected ({len(self.unexpected)}, ignored): {_list(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k}: checkpoint {tuple(s)} vs model {tuple(t)}" for k, s, t in self.mismatched]
            lines.append(f"shape mismatch ({len(self.mismatched)}, not loaded): {_list(shown)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def run_folder_message(folder: Path) -> str:
    """Where the checkpoints of the training run folder ``folder`` are."""
    names = {"best": "the best on val", "final": "the end of training", "last": "resumable"}
    found = [f"{folder / 'checkpoints' / name} ({what})" for name, what in names.items()
             if (folder / "checkpoints" / name / WEIGHTS_NAME).is_file()]
    listing = ", ".join(found) if found else f"{folder / 'checkpoints' / 'best'} once the run has validated"
    return (f"{folder} is a training run folder, not a checkpoint: its config.json holds the run's settings. Load one "
            f"of its checkpoints: {listing}.")


def match_state(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *,
                source: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of ``state`` that fit ``own`` (a model's ``state_dict``) by name and shape, and the
    :class:`LoadReport` of what is missing, unexpected or mis-shaped."""
    report = LoadReport(source=source)
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            to_load[key] = value
    report.missing = [k for k in own if k not in state]
    report.loaded = sorted(to_load)
    return to_load, report
