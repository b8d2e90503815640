"""Slow, obviously-correct references shared by the module and loss tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur_by_hand"]


def gaussian_blur_by_hand(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur of a one-channel NCHW map as one 2-D convolution of the replicate-padded map.

    ``sigma`` follows the ``0.3 * ((k - 1) / 2 - 1) + 0.8`` rule (0.8 for ``k = 3``); the taps are
    computed here, independently of the library's separable blur.
    """
    sigma = 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8
    weights = [math.exp(-((i - kernel_size // 2) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    taps = torch.tensor(weights, dtype=x.dtype) / sum(weights)
    padded = F.pad(x, (kernel_size // 2,) * 4, mode="replicate")
    return F.conv2d(padded, (taps[:, None] * taps[None, :])[None, None])
