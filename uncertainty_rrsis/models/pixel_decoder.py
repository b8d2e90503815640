"""Cross-modal deformable pixel decoder of the reference model (the block Phi of paper Eq. 1).

The stride 8/16/32 levels are flattened into one token sequence and refined by ``num_layers``
layers, each: multi-scale deformable self-attention -> cross-attention to the text tokens ->
feed-forward, each with a residual connection and a LayerNorm (post-norm, as in Deformable
DETR / Mask2Former). An FPN step then adds the stride-4 level to the refined stride-8 level
to give the mask feature ``F`` at stride 4.

This file also holds the two small building blocks the mask head reuses: a multi-head
attention on ``F.scaled_dot_product_attention`` with a boolean keep mask, and the 2-D sine
positional encoding.

Axis legend
    b: batch   d: width (``dim``)   y, x: rows / columns of a level   n: tokens of all levels
    q: queries   k: keys   t: text tokens   h: attention heads   c: per-head width (d / h)
    f: sine frequencies   two: the (sin, cos) pair
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .._ops import resize_logits
from .deformable_attention import MultiScaleDeformableAttention

__all__ = [
    "CrossModalPixelDecoder",
    "PixelDecoderLayer",
    "MultiHeadAttention",
    "FeedForward",
    "sine_position_encoding",
    "text_keep_mask",
]


def sine_position_encoding(
    height: int,
    width: int,
    dim: int,
    *,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """2-D sine positional encoding (DETR style) of a ``height x width`` grid, row-major.

    The first ``dim / 2`` channels encode the row, the last ``dim / 2`` the column; each half
    interleaves sin and cos of the pixel-centre coordinate ``2 pi (i + 0.5) / size`` at
    geometrically spaced frequencies. ``dim`` must be divisible by 4.

    Shapes:
        output: (height * width, dim)
    """
    if dim % 4 != 0:
        raise ValueError(f"sine_position_encoding: dim must be divisible by 4; got {dim}.")
    half = dim // 2
    freq_index = torch.arange(half // 2, device=device, dtype=torch.float32)
    inv_freq = temperature ** (-2.0 * freq_index / half)  # (f,)

    def encode(size: int) -> torch.Tensor:
        coord = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 * math.pi / size)
        angle = coord[:, None] * inv_freq[None, :]  # (size, f)
        return rearrange(torch.stack((angle.sin(), angle.cos()), dim=-1), "s f two -> s (f two)")

    pos_y = repeat(encode(height), "y e -> (y x) e", x=width)
    pos_x = repeat(encode(width), "x e -> (y x) e", y=height)
    return torch.cat((pos_y, pos_x), dim=-1).to(dtype or torch.get_default_dtype())


def text_keep_mask(text_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a (B, T) padding mask (True = padding) into a (B, 1, 1, T) keep mask (True = attend)."""
    if text_padding_mask is None:
        return None
    return rearrange(~text_padding_mask, "b t -> b 1 1 t")


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention`` with a boolean keep mask.

    ``keep`` is True where a query may attend to a key. A query whose keys are all masked
    attends to every key instead (no NaN); with ``zero_empty_rows=True`` its output is then
    set to exactly zero (used for a sentence made only of padding), otherwise the
    attend-everywhere result is kept (the Mask2Former fallback for an empty predicted mask).
    The key projection has no bias (softmax ignores it).

    Args:
        dim: width ``D``; must be divisible by ``num_heads``.
        num_heads: attention heads.
        dropout: dropout on the attention probabilities (training only).
        device, dtype: factory arguments.

    Shapes:
        - query: (B, Q, D);  key, value: (B, K, D)
        - keep: None or bool, broadcastable to (B, num_heads, Q, K), e.g. (B, 1, 1, K)
        - output: (B, Q, D)
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"MultiHeadAttention: dim={dim} must be divisible by num_heads={num_heads}; "
                f"choose num_heads among the divisors of {dim}."
            )
        factory = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.dropout = float(dropout)
        self.q_proj = nn.Linear(self.dim, self.dim, **factory)
        self.k_proj = nn.Linear(self.dim, self.dim, bias=False, **factory)
        self.v_proj = nn.Linear(self.dim, self.dim, **factory)
        self.out_proj = nn.Linear(self.dim, self.dim, **factory)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        keep: torch.Tensor | None = None,
        zero_empty_rows: bool = False,
    ) -> torch.Tensor:
        """Attend from ``query`` (B, Q, D) to ``key``/``value`` (B, K, D); returns (B, Q, D)."""
        q = rearrange(self.q_proj(query), "b q (h c) -> b h q c", h=self.num_heads)
        k = rearrange(self.k_proj(key), "b k (h c) -> b h k c", h=self.num_heads)
        v = rearrange(self.v_proj(value), "b k (h c) -> b h k c", h=self.num_heads)
        attn_mask = None
        has_any = None
        if keep is not None:
            has_any = keep.any(dim=-1, keepdim=True)  # (b|1, h|1, q|1, 1)
            attn_mask = keep | ~has_any
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(rearrange(out, "b h q c -> b q (h c)"))
        if zero_empty_rows and has_any is not None:
            # A query with no key at all contributes nothing (all heads share the text mask).
            valid = has_any.all(dim=1)  # (b|1, q|1, 1)
            out = out * valid.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class FeedForward(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear.

    Shapes:
        x: (..., D) -> (..., D)
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.hidden_dim = int(hidden_dim)
        self.fc1 = nn.Linear(self.dim, self.hidden_dim, **factory)
        self.fc2 = nn.Linear(self.hidden_dim, self.dim, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


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
        factory = {"device": device, "dtype": dtype}
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
        factory = {"device": device, "dtype": dtype}
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
        for conv in (self.lateral[0], self.output[0], self.mask_projection):
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
