"""Text-conditioned mask head of the reference model: one sentence query, masked attention.

The sentence query is the masked mean of the text tokens passed through an MLP, plus a
learnable query. ``num_layers`` Mask2Former-style layers refine it: masked cross-attention
to one decoder level (coarsest first, round robin) restricted to where the previous
prediction is foreground, attention to the text tokens, feed-forward (each with residual +
LayerNorm). After every layer the query, through an MLP mask embedding, is dotted with the
mask feature ``F`` to predict the foreground logit; the last prediction is ``P_fg``.

The attention mask comes from the previous prediction, detached, by tensor ops only
(compile-friendly); a query whose mask is empty attends everywhere (Mask2Former's fallback).

Axis legend
    b: batch   q: queries (one sentence query)   d: width (``dim``)   t: text tokens
    y, x: rows / columns   k: keys of one level (y * x)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn

from .._attention import keep_from_padding
from .._ops import resize_logits
from .attention import FeedForward, MultiHeadAttention, sine_position_encoding, text_keep_mask

__all__ = ["TextConditionedMaskHead", "MaskHeadLayer", "MLP"]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them.

    Shapes:
        x: (..., in_dim) -> (..., out_dim)
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        *,
        num_layers: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, device=device, dtype=dtype) for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class MaskHeadLayer(nn.Module):
    """Masked cross-attention -> text attention -> FFN, each with residual + LayerNorm.

    Shapes:
        - query, query_pos: (B, Q, D) and (1 or B, Q, D)
        - memory, memory_pos: (B, K, D) and (1 or B, K, D), one flattened decoder level
        - memory_keep: (B, 1, Q, K) bool, True = may attend (empty rows attend everywhere)
        - text: (B, T, D);  text_keep: None or (B, 1, 1, T) bool, True = real token
        - output: (B, Q, D)
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.cross_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout, **factory)
        self.norm1 = nn.LayerNorm(dim, **factory)
        self.text_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout, **factory)
        self.norm2 = nn.LayerNorm(dim, **factory)
        self.ffn = FeedForward(dim, ffn_dim, dropout=dropout, **factory)
        self.norm3 = nn.LayerNorm(dim, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_keep: torch.Tensor,
        text: torch.Tensor,
        text_keep: torch.Tensor | None,
    ) -> torch.Tensor:
        attended = self.cross_attn(query + query_pos, memory + memory_pos, memory, keep=memory_keep)
        query = self.norm1(query + self.dropout(attended))
        attended = self.text_attn(query + query_pos, text, text, keep=text_keep, zero_empty_rows=True)
        query = self.norm2(query + self.dropout(attended))
        return self.norm3(query + self.dropout(self.ffn(query)))


class TextConditionedMaskHead(nn.Module):
    """A sentence query refined by masked-attention layers; its dot product with ``F`` is ``P_fg``.

    Args:
        dim: width ``D``; divisible by ``num_heads`` and by 4.
        num_layers: masked-attention layers (3 by default).
        num_heads, ffn_dim, dropout: transformer sizes.
        num_levels: decoder levels attended round robin, coarsest first (3: strides 32, 16, 8).
        device, dtype: factory arguments.

    Attributes:
        dim, num_layers, num_heads, ffn_dim, num_levels (int).

    Shapes:
        - mask_feature: (B, D, H4, W4)
        - levels: ``num_levels`` maps (B, D, H_s, W_s), finest first (strides 8, 16, 32)
        - text: (B, T, D);  text_padding_mask: None or (B, T) bool, True = padding
        - output: (B, 1, H4, W4) foreground logits ``P_fg``
    """

    def __init__(
        self,
        dim: int,
        *,
        num_layers: int = 3,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_levels: int = 3,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.ffn_dim = int(ffn_dim)
        self.num_levels = int(num_levels)
        self.sentence_mlp = MLP(self.dim, self.dim, self.dim, num_layers=2, **factory)
        self.query_feat = nn.Parameter(torch.zeros(1, 1, self.dim, **factory))
        self.query_pos = nn.Parameter(torch.empty(1, 1, self.dim, **factory))
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, self.dim, **factory))
        self.layers = nn.ModuleList(
            MaskHeadLayer(self.dim, num_heads=self.num_heads, ffn_dim=self.ffn_dim, dropout=dropout, **factory)
            for _ in range(self.num_layers)
        )
        self.norm = nn.LayerNorm(self.dim, **factory)
        self.mask_embed = MLP(self.dim, self.dim, self.dim, num_layers=3, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.query_feat)
        nn.init.normal_(self.query_pos)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def pool_text(text: torch.Tensor, text_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of the real tokens, (B, T, D) -> (B, D); zero for a sentence of only padding."""
        if text_padding_mask is None:
            return text.mean(dim=1)
        weights = keep_from_padding(text_padding_mask).to(text.dtype)  # (b, t)
        total = torch.einsum("bt,btd->bd", weights, text)
        return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0)

    def predict(self, query: torch.Tensor, mask_feature: torch.Tensor) -> torch.Tensor:
        """Mask logits ``<MLP(LN(query)), F>``: (B, Q, D), (B, D, H, W) -> (B, Q, H, W)."""
        embed = self.mask_embed(self.norm(query))
        return torch.einsum("bqd,bdyx->bqyx", embed, mask_feature.to(embed.dtype))

    @staticmethod
    def attention_keep(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Where the (detached) prediction resized to ``size`` is foreground: (B, Q, H, W) -> (B, 1, Q, K)."""
        resized = resize_logits(logits.detach(), size)
        return rearrange(resized >= 0, "b q y x -> b 1 q (y x)")

    def forward(
        self,
        mask_feature: torch.Tensor,
        levels: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``P_fg`` (B, 1, H4, W4)."""
        coarse_first = list(levels)[::-1]
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in coarse_first]
        memories = [rearrange(f, "b d y x -> b (y x) d") for f in coarse_first]
        positions = [
            rearrange(
                sine_position_encoding(h, w, self.dim, device=f.device, dtype=f.dtype)
                + self.level_embed[i].to(f.dtype),
                "k d -> 1 k d",
            )
            for i, ((h, w), f) in enumerate(zip(sizes, coarse_first))
        ]
        text_keep = text_keep_mask(text_padding_mask)
        query = rearrange(self.sentence_mlp(self.pool_text(text, text_padding_mask)), "b d -> b 1 d")
        query = query + self.query_feat
        logits = self.predict(query, mask_feature)
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            keep = self.attention_keep(logits, sizes[lvl])
            query = layer(query, self.query_pos, memories[lvl], positions[lvl], keep, text, text_keep)
            logits = self.predict(query, mask_feature)
        return logits

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_layers={self.num_layers}, num_heads={self.num_heads}, "
            f"ffn_dim={self.ffn_dim}, num_levels={self.num_levels}"
        )
