"""Shared tensor operations: the one resize-on-logits and the one blur of the library.

Every module resizes logit maps and blurs probability maps through the two functions below,
so the convention (bilinear, ``align_corners=False``, on logits) lives in one place.

Axis legend
    b: batch   c: channels   h, w: spatial rows / columns   k: blur kernel taps
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["resize_logits", "gaussian_blur", "gaussian_taps", "inverse_sqrt", "in_layout_of"]


def resize_logits(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize an NCHW logit (or feature) map to ``size`` = (H, W).

    Bilinear with ``align_corners=False``, applied to logits, never to probabilities
    (paper Eq. 2 and 10). Returns ``x`` itself when it already has that size.

    Shapes:
        x: (B, C, H_in, W_in) -> (B, C, H, W)
    """
    size = (size[0], size[1])  # symbolic sizes stay symbolic under export / dynamic compile
    if x.shape[-2] == size[0] and x.shape[-1] == size[1]:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def gaussian_taps(kernel_size: int, sigma: float | None = None) -> tuple[float, ...]:
    """The normalised taps of a 1-D Gaussian of ``kernel_size`` (odd) taps, as Python floats.

    ``sigma`` defaults to the common ``0.3 * ((k - 1) / 2 - 1) + 0.8`` rule (sigma 0.8 and taps
    about (0.239, 0.522, 0.239) for ``k = 3``). Kept as floats (not a buffer) so that casting a
    module to bfloat16 never rounds the kernel.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur kernel_size must be a positive odd int; got {kernel_size!r}")
    if sigma is None:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    half = (kernel_size - 1) / 2
    weights = [math.exp(-((i - half) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    total = sum(weights)
    return tuple(w / total for w in weights)


def gaussian_blur(x: torch.Tensor, taps: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW map with replicate padding.

    Replicate padding keeps a constant map constant (a map of all ones stays all ones at
    the border), so blurring an error map never invents errors at the image edge.

    The blur is computed as weighted sums of shifted views of the padded map, with the taps
    as Python floats: no kernel tensor is built per call, so nothing is copied from the host
    to the device (a blocking copy that would synchronise a CUDA stream on every call), and
    bf16 / fp16 maps are weighted with the exact taps (the arithmetic runs in fp32 inside
    each kernel).

    Args:
        x: (B, C, H, W) map, any float dtype.
        taps: the K (odd) taps of a 1-D kernel, from :func:`gaussian_taps`.

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    k = len(taps)
    if k == 1:
        return x
    pad = k // 2
    height, width = x.shape[-2], x.shape[-1]
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # (b, c, h + 2 pad, w + 2 pad)
    x = _weighted_shifts(x, taps, dim=3, size=width)  # along w: (b, c, h + 2 pad, w)
    return _weighted_shifts(x, taps, dim=2, size=height)  # along h: (b, c, h, w)


def _weighted_shifts(x: torch.Tensor, taps: Sequence[float], *, dim: int, size) -> torch.Tensor:
    """``sum_i taps[i] * x.narrow(dim, i, size)``: a 1-D correlation along ``dim``, one fused
    multiply-add kernel per tap."""
    out = x.narrow(dim, 0, size) * taps[0]
    for i in range(1, len(taps)):
        out = torch.add(out, x.narrow(dim, i, size), alpha=taps[i])
    return out


def inverse_sqrt(n: int) -> float:
    """``1 / sqrt(n)`` as a Python float (attention temperature)."""
    return 1.0 / math.sqrt(n)


def in_layout_of(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) laid out in memory as ``like``: channels-last if ``like`` is, else contiguous.

    A module that computes a map through a token layout returns it in the input's layout, so the
    next convolution of a wrapped decoder runs the same kernel on the same strides as without it
    (and returns the same bits when the values are the same).
    """
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
