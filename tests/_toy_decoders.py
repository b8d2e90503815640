"""Tiny toy decoders for tests that wrap a decoder with :class:`RiskGuidedDecoder`.

Both take ``(features, text, text_padding_mask)`` with ``features`` a list of
``(B, dim, H_i, W_i)`` maps, finest first, and produce one foreground logit map at the
resolution of the finest level.

- :class:`ToyFPNDecoder` returns only the logits; its submodule ``fpn.out`` outputs the
  high-resolution mask feature ``F`` (so the wrapper captures it with
  ``mask_feature_from="fpn.out"``).
- :class:`ToyPairDecoder` returns ``(logits, mask_feature)``.

Axis legend
    b: batch   c: width (``dim``)   l: text tokens   h, w: spatial
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ToyFPN", "ToyFPNDecoder", "ToyPairDecoder"]


class ToyFPN(nn.Module):
    """Top-down FPN: 1x1 laterals, nearest upsample-add, then ``out`` (3x3 conv) on the finest level."""

    def __init__(self, dim: int, num_levels: int = 4) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(dim, dim, 1) for _ in range(num_levels))
        self.out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lat = self.lateral[i](features[i])
            x = lat + F.interpolate(x, size=lat.shape[-2:], mode="nearest")
        return self.out(x)


class ToyFPNDecoder(nn.Module):
    """Returns only ``coarse_logits`` (B, 1, H0, W0); ``fpn.out`` gives the mask feature (B, dim, H0, W0)."""

    def __init__(self, dim: int, num_levels: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.fpn = ToyFPN(dim, num_levels)
        self.text_proj = nn.Linear(dim, dim)
        self.head = nn.Conv2d(dim, 1, 1)

    def decode(self, features, text, text_padding_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.fpn(list(features))
        if text_padding_mask is None:
            keep = torch.ones(text.shape[:2], dtype=text.dtype, device=text.device)
        else:
            keep = (~text_padding_mask).to(text.dtype)
        pooled = (text * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)  # (b, c)
        sentence = self.text_proj(pooled)[:, :, None, None]
        logits = self.head(F.relu(feature) * torch.sigmoid(sentence))
        return logits, feature

    def forward(self, features, text, text_padding_mask=None) -> torch.Tensor:
        return self.decode(features, text, text_padding_mask)[0]


class ToyPairDecoder(ToyFPNDecoder):
    """Same network, returns ``(coarse_logits, mask_feature)``."""

    def forward(self, features, text, text_padding_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(features, text, text_padding_mask)
