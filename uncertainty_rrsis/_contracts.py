"""Input checks at the boundary of every public module.

Each check raises a :class:`ValueError` that names the module and the argument, states the
expected shape and the received one, and says how to fix it. Checks read only shapes and
dtypes, never tensor values, and they switch off while ``torch.compile``, ``torch.export``,
TorchScript tracing or ONNX export trace the module, so they cost nothing in a compiled graph.

Inputs are checked once, at the entry the user calls. A composite module (the wrapper, the
reference model, its decoder) checks its own inputs and marks its parts with
:func:`trust_inputs`: their ``check_inputs`` attribute becomes False and they skip their
checks, because what they receive was checked or built by the composite.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "checks_enabled",
    "trust_inputs",
    "check_rank",
    "check_channels",
    "check_same_batch",
    "check_padding_mask",
]


def checks_enabled(module: object | None = None) -> bool:
    """Whether to run input checks now.

    False while a compiler, exporter or tracer is tracing the current call, and for a
    ``module`` whose ``check_inputs`` attribute is False (a part of a composite that checked
    the inputs at its own entry, see :func:`trust_inputs`).
    """
    if module is not None and not getattr(module, "check_inputs", True):
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        if getattr(compiler, "is_compiling", lambda: False)():
            return False
        if getattr(compiler, "is_exporting", lambda: False)():
            return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    onnx = getattr(torch, "onnx", None)
    if onnx is not None and getattr(onnx, "is_in_onnx_export", lambda: False)():
        return False
    return True


def trust_inputs(*parts: object) -> None:
    """Mark ``parts`` (modules, or None) and their submodules as parts of a composite.

    Every submodule that has a ``check_inputs`` attribute gets ``check_inputs = False``, so it
    skips its own input checks; the composite checks at its entry instead. Modules without
    that attribute (a user's own decoder, say) are left alone.
    """
    for part in parts:
        if part is None:
            continue
        for module in part.modules():  # type: ignore[attr-defined]
            if hasattr(module, "check_inputs"):
                module.check_inputs = False


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def check_rank(owner: str, name: str, tensor: object, layout: str, *, fix: str = "") -> None:
    """Require ``tensor`` to be a tensor whose rank equals the number of axes in ``layout``.

    ``layout`` is written like ``"(B, C, H, W)"``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(
            f"{owner}: `{name}` must be a torch.Tensor of shape {layout}; got {type(tensor).__name__}."
        )
    rank = len([a for a in layout.strip("()").split(",") if a.strip()])
    if tensor.dim() != rank:
        hint = f" {fix}" if fix else ""
        raise ValueError(
            f"{owner}: `{name}` must have shape {layout} ({rank} dims); "
            f"got shape {_shape(tensor)} ({tensor.dim()} dims).{hint}"
        )


def check_channels(
    owner: str, name: str, tensor: torch.Tensor, expected: int, *, dim: int, layout: str, fix: str = ""
) -> None:
    """Require ``tensor.shape[dim] == expected``."""
    got = int(tensor.shape[dim])
    if got != expected:
        hint = f" {fix}" if fix else ""
        raise ValueError(
            f"{owner}: `{name}` must have shape {layout} with {expected} at dim {dim}; "
            f"got shape {_shape(tensor)}.{hint}"
        )


def check_same_batch(owner: str, tensors: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Require every named tensor to share the batch size of the first one."""
    first_name, first = tensors[0]
    batch = int(first.shape[0])
    for name, t in tensors[1:]:
        if int(t.shape[0]) != batch:
            raise ValueError(
                f"{owner}: batch sizes differ: `{first_name}` has shape {_shape(first)} (B={batch}) but "
                f"`{name}` has shape {_shape(t)} (B={int(t.shape[0])}). Pass tensors of the same batch."
            )


def check_padding_mask(owner: str, mask: object, text: torch.Tensor) -> None:
    """Require a bool (B, L) mask, True = padding, matching ``text`` (B, L, D)."""
    check_rank(owner, "text_padding_mask", mask, "(B, L)")
    assert isinstance(mask, torch.Tensor)
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{owner}: `text_padding_mask` must be a bool tensor (True = padding, ignored); got dtype "
            f"{mask.dtype}. A Hugging Face attention_mask (1 = keep) converts as `attention_mask == 0`."
        )
    expected = (int(text.shape[0]), int(text.shape[1]))
    if _shape(mask) != expected:
        raise ValueError(
            f"{owner}: `text_padding_mask` must have shape (B, L) = {expected} to match `text` of shape "
            f"{_shape(text)}; got shape {_shape(mask)}."
        )


def check_float(owner: str, name: str, tensor: torch.Tensor) -> None:
    """Require a floating-point tensor."""
    if not tensor.is_floating_point():
        raise ValueError(f"{owner}: `{name}` must be a floating-point tensor; got dtype {tensor.dtype}.")
