"""Input checks at the boundary of every public module.

Each check raises a :class:`ValueError` that names the module and the argument, states the
expected shape and the received one, and says how to fix it. Checks read only shapes and
dtypes, never tensor values, and they switch off while ``torch.compile``, ``torch.export``,
TorchScript tracing or ONNX export trace the module, so they cost nothing in a compiled graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "checks_enabled",
    "check_rank",
    "check_channels",
    "check_same_batch",
    "check_padding_mask",
]


def checks_enabled() -> bool:
    """False while a compiler, exporter or tracer is tracing the current call."""
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
