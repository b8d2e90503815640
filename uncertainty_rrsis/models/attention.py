"""Building blocks shared by the pixel decoder and the mask head of the reference model.

A multi-head attention on the library's one masked attention
(:func:`uncertainty_rrsis._attention.masked_attention`: rows with nothing to attend to stay
finite), a feed-forward block, the 2-D sine positional encoding, and the text keep mask in the
shape attention wants.

Axis legend
    b: batch   d: width (``dim``)   y, x: rows / columns of a level
    q: queries   k: keys   t: text tokens   h: attention heads   c: per-head width (d / h)
    f: sine frequencies   two: the (sin, cos) pair
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .._attention import keep_from_padding, masked_attention

__all__ = ["MultiHeadAttention", "FeedForward", "sine_position_encoding", "text_keep_mask"]


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
    return rearrange(keep_from_padding(text_padding_mask), "b t -> b 1 1 t")


class MultiHeadAttention(nn.Module):
    """Multi-head attention on the library's masked attention, with a boolean keep mask.

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
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
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
        out, valid = masked_attention(q, k, v, keep, dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(rearrange(out, "b h q c -> b q (h c)"))
        if zero_empty_rows and valid is not None:
            # A query with no key at all contributes nothing (all heads share the text mask).
            out = out * valid.all(dim=1).to(out.dtype)  # (b|1, q|1, 1)
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
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.hidden_dim = int(hidden_dim)
        self.fc1 = nn.Linear(self.dim, self.hidden_dim, **factory)
        self.fc2 = nn.Linear(self.hidden_dim, self.dim, **factory)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))
