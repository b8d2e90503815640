"""The geometry of coarse to fine: window offsets, the blending weight, connected parts, and the
whole-scene logits at native resolution one band at a time.

Axis legend
    s_h, s_w: the whole-scene pass's grid   H, W: the scene's rows / columns
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["coarse_crop", "connected_components", "hann_window", "nearest_index", "window_starts"]


def hann_window(height: int, width: int) -> torch.Tensor:
    """(height, width) float32 blending weight ``sin^2(pi (y + 0.5) / height) * sin^2(pi (x + 0.5) / width)``:
    positive everywhere, largest at the centre; shifted by half its side it sums to one with itself."""
    def axis(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return (axis(height)[:, None] * axis(width)[None, :]).float()


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of ``window`` pixels every ``stride`` pixels along ``length`` pixels, the last one
    flush with the end (``[0]`` when ``window >= length``)."""
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, max(1, stride)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """8-connected components of an (h, w) bool map: labels 1..n (0 = background) as int64, and n.

    One pass over the pixels (``scipy.ndimage.label``), whatever the components' shapes: a road
    network or a river that winds over the whole scene costs what a blob of the same area does.
    Components are numbered in the order their first pixel appears, row by row.
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask.cpu().numpy().astype(bool), structure=np.ones((3, 3), dtype=bool))
    return torch.from_numpy(labels.astype(np.int64, copy=False)), int(count)


def nearest_index(start: int, stop: int, length: int, cells: int) -> torch.Tensor:
    """For native pixels ``start .. stop`` of ``length``, the cell of a ``cells``-cell grid each lies in."""
    return torch.clamp(((torch.arange(start, stop) + 0.5) * cells / length).long(), max=cells - 1)


def _source_index(out_len: int, in_len: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices and weights (``align_corners=False``) of output pixels ``start..stop``."""
    src = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (in_len / out_len) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    return i0, (i0 + 1).clamp(max=in_len - 1), (src - i0).float()


def coarse_crop(coarse: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
                ) -> torch.Tensor:
    """Rows / columns ``[a, b)`` of the (s_h, s_w) map ``coarse`` resized bilinearly (``align_corners=False``)
    to ``size`` = (H, W), without computing the rest: a new float32 (b - a, d - c) tensor."""
    r0, r1, ly = _source_index(size[0], coarse.shape[0], *rows)
    c0, c1, lx = _source_index(size[1], coarse.shape[1], *cols)
    band = coarse[r0] * (1 - ly)[:, None] + coarse[r1] * ly[:, None]
    return band[:, c0] * (1 - lx) + band[:, c1] * lx
