"""Cross-modal deformable pixel decoder of the reference model (the block Phi of paper Eq. 1).

The stride 8/16/32 levels are flattened into one token sequence and refined by ``num_layers``
layers, each: multi-scale deformable self-attention -> cross-attention to the text tokens ->
feed-forward, each with a residual connection and a LayerNorm (post-norm, as in Deformable
DETR / Mask2Former). An FPN step then adds the stride-4 level to the refined stride-8 level
to give the mask feature ``F`` at stride 4.

The attention and feed-forward blocks it shares with the mask head live in :mod:`.attention`.

Axis legend
    b: batch   d: width (``dim``)   y, x: rows / columns of a level   n: tokens of all levels
    q: queries   k: keys   t: text tokens   h: attention heads   c: per-head width (d / h)
    f: sine frequencies   two: the (sin, cos) pair
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from einops import rearrange, repeat
from torch import nn

from .._ops import resize_logits
from .attention import FeedForward, MultiHeadAttention, sine_position_encoding, text_keep_mask
from .deformable_attention import MultiScaleDeformableAttention

__all__ = ["CrossModalPixelDecoder", "PixelDecoderLayer"]


class PixelDecoderLayer(nn.Module):
    """One layer of the cross-modal pixel decoder (post-norm).

    ``x = LN(x + DeformAttn(x + pos, ref, x))``; ``x = LN(x + TextAttn(x + pos, text))``;
    ``x = LN(x + FFN(x))``. A sentence made only of padding adds nothing in the text step.

    Shapes:
        - x, pos: (B, N, D) and (1 or B, N, D)
        - reference_points: (1, N, 2) normalised (x, y)
        - text: (B, T, D);  text_keep: None or (B, 1, 1, T) bool, True = real token
        - output: (B, N, D)
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.self_attn = MultiScaleDeformableAttention(
            dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points, **factory
        )
        self.norm1 = nn.LayerNorm(dim, **factory)
        self.text_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout, **factory)
        self.norm2 = nn.LayerNorm(dim, **factory)
        self.ffn = FeedForward(dim, ffn_dim, dropout=dropout, **factory)
        self.norm3 = nn.LayerNorm(dim, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        text: torch.Tensor,
        text_keep: torch.Tensor | None,
    ) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, reference_points, x, spatial_shapes)))
        attended = self.text_attn(x + pos, text, text, keep=text_keep, zero_empty_rows=True)
        x = self.norm2(x + self.dropout(attended))
        return self.norm3(x + self.dropout(self.ffn(x)))


def _group_count(channels: int) -> int:
    """GroupNorm groups: 32 when possible, else the largest divisor of ``channels`` below 32."""
    return math.gcd(32, channels)


class CrossModalPixelDecoder(nn.Module):
    """Deformable-attention pixel decoder over strides 8/16/32 with text in every layer, plus FPN.

    Every level already has ``dim`` channels (the vision encoder projects them). The stride
    8/16/32 levels get a sine positional encoding plus a learnable level embedding, are
    flattened into one sequence and pass through ``num_layers`` :class:`PixelDecoderLayer`.
    The FPN step: ``F = proj(ReLU(GN(conv3x3(GN(conv1x1(x4)) + resize(y8)))))`` where ``x4``
    is the stride-4 input and ``y8`` the refined stride-8 level, resized bilinearly to the
    exact stride-4 size (sizes need not be powers of two).

    Args:
        dim: width ``D``; divisible by ``num_heads`` and by 4.
        num_layers, num_heads, num_points, ffn_dim, dropout: transformer sizes.
        device, dtype: factory arguments.

    Attributes:
        dim, num_layers, num_heads, num_points, ffn_dim, num_levels (= 3 attended levels) (int).

    Shapes:
        - features: 4 maps (B, D, H_s, W_s), finest first (strides 4, 8, 16, 32)
        - text: (B, T, D);  text_padding_mask: None or (B, T) bool, True = padding
        - output: ``(mask_feature, levels)``: mask_feature (B, D, H4, W4) and the 3 refined
          levels [(B, D, H8, W8), (B, D, H16, W16), (B, D, H32, W32)], finest first
    """

    num_levels: int = 3

    def __init__(
        self,
        dim: int,
        *,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim % 4 != 0:
            raise ValueError(f"CrossModalPixelDecoder: dim must be divisible by 4 (sine encoding); got {dim}.")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.num_points = int(num_points)
        self.ffn_dim = int(ffn_dim)
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, self.dim, **factory))
        self.layers = nn.ModuleList(
            PixelDecoderLayer(
                self.dim, num_heads=self.num_heads, num_levels=self.num_levels,
                num_points=self.num_points, ffn_dim=self.ffn_dim, dropout=dropout, **factory,
            )
            for _ in range(self.num_layers)
        )
        groups = _group_count(self.dim)
        self.lateral = nn.Sequential(
            nn.Conv2d(self.dim, self.dim, 1, bias=False, **factory), nn.GroupNorm(groups, self.dim, **factory)
        )
        self.output = nn.Sequential(
            nn.Conv2d(self.dim, self.dim, 3, padding=1, bias=False, **factory),
            nn.GroupNorm(groups, self.dim, **factory),
            nn.ReLU(),
        )
        self.mask_projection = nn.Conv2d(self.dim, self.dim, 1, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.level_embed)
        for conv in (cast(nn.Conv2d, self.lateral[0]), cast(nn.Conv2d, self.output[0]), self.mask_projection):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @staticmethod
    def reference_points(
        spatial_shapes: Sequence[tuple[int, int]],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Pixel centres of every level, normalised (x, y), shape (1, N, 2).

        Float64 when ``dtype`` is float64, else float32 (also under autocast).
        """
        precise = torch.float64 if dtype == torch.float64 else torch.float32
        points = []
        for height, width in spatial_shapes:
            ys = (torch.arange(height, device=device, dtype=precise) + 0.5) / height
            xs = (torch.arange(width, device=device, dtype=precise) + 0.5) / width
            grid_x = repeat(xs, "x -> (y x)", y=height)
            grid_y = repeat(ys, "y -> (y x)", x=width)
            points.append(torch.stack((grid_x, grid_y), dim=-1))
        return rearrange(torch.cat(points, dim=0), "n xy -> 1 n xy").to(precise)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(mask_feature (B, D, H4, W4), [refined stride 8, 16, 32 levels])``."""
        stride4, levels = features[0], list(features[1:])
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in levels]
        x = torch.cat([rearrange(f, "b d y x -> b (y x) d") for f in levels], dim=1)
        level_embed = self.level_embed.to(x.dtype)
        pos = torch.cat(
            [
                sine_position_encoding(h, w, self.dim, device=x.device, dtype=x.dtype) + level_embed[i]
                for i, (h, w) in enumerate(shapes)
            ],
            dim=0,
        )
        pos = rearrange(pos, "n d -> 1 n d")  # (1, n, d)
        ref = self.reference_points(shapes, device=x.device, dtype=x.dtype)
        keep = text_keep_mask(text_padding_mask)
        for layer in self.layers:
            x = layer(x, pos, ref, shapes, text, keep)
        refined = [
            rearrange(chunk, "b (y x) d -> b d y x", y=h, x=w)
            for chunk, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        size4 = (int(stride4.shape[-2]), int(stride4.shape[-1]))
        y = self.lateral(stride4) + resize_logits(refined[0], size4)
        mask_feature = self.mask_projection(self.output(y))
        return mask_feature, refined

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_layers={self.num_layers}, num_heads={self.num_heads}, "
            f"num_points={self.num_points}, ffn_dim={self.ffn_dim}"
        )
