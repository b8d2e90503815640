"""Uncertainty-Gated Fusion (UGF), paper Eq. 9-12.

Axis legend
    b: batch   c: visual width (``dim``)   d: text width (``text_dim``)
    h, w: rows / columns of the visual level   n: h * w positions   l: text tokens
    g: attention heads   e: per-head width (c / g)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from einops import rearrange
from torch import nn

from .._attention import keep_from_padding, masked_attention
from .._contracts import (
    check_channels,
    check_padding_mask,
    check_rank,
    check_same_batch,
    checks_enabled,
)
from .._ops import in_layout_of, resize_logits

__all__ = ["UncertaintyGatedFusion"]


class UncertaintyGatedFusion(nn.Module):
    r"""Injects language into a visual map, gated per position by the uncertainty (Eq. 9-12).

    .. math::

        \Delta V = \operatorname{Dropout}(\operatorname{Linear}(\operatorname{MHA}(V, T, T))),\quad
        g = \sigma(\alpha\, u + \beta),\quad
        V^{+} = \operatorname{LayerNorm}(V + g \odot \Delta V)

    where ``u`` is the uncertainty logit map resized (bilinear on logits) to the visual map's
    size. ``alpha`` starts positive (1.0), so more uncertain positions receive more language.
    The gate is one scalar per position, shared by all channels. A sentence made only of
    padding injects nothing (``Delta V = 0``) instead of producing NaN.

    The output projection of the multi-head attention is the ``Linear`` of Eq. 9 (two
    linear maps in a row would be one linear map). It starts at exactly zero, so at
    initialisation ``V+ = LayerNorm(V)``; with ``norm=False`` the module is then the
    identity, which is the safe choice when wrapping a decoder trained without UGF.

    Args:
        dim: visual width ``C``; must be divisible by ``num_heads``.
        text_dim: width of ``text``; defaults to ``dim``.
        num_heads: attention heads.
        dropout: dropout on ``Delta V`` (Eq. 9).
        norm: apply the LayerNorm of Eq. 12 (default True, as in the paper).
        alpha_init: initial gate scale ``alpha`` (> 0).
        beta_init: initial gate bias ``beta``.
        device, dtype: factory arguments.

    Attributes:
        dim (int): visual width ``C``.
        text_dim (int): width of the text features.
        num_heads (int): attention heads.
        head_dim (int): per-head width, ``dim // num_heads``.
        alpha (nn.Parameter): scalar gate scale of Eq. 11, starts at ``alpha_init``.
        beta (nn.Parameter): scalar gate bias of Eq. 11, starts at ``beta_init``.

    Shapes:
        - visual: (B, C, H, W), or a list of such levels (then a list is returned)
        - text: (B, L, D)
        - uncertainty: (B, 1, Hu, Wu) logits at any resolution, resized to (H, W)
        - text_padding_mask: (B, L) bool, True = padding; None = no padding
        - output: (B, C, H, W) fused visual map ``V+``, in the memory format of ``visual``
          (channels-last in, channels-last out; contiguous otherwise)
    """

    def __init__(
        self,
        dim: int,
        *,
        text_dim: int | None = None,
        num_heads: int = 8,
        dropout: float = 0.0,
        norm: bool = True,
        alpha_init: float = 1.0,
        beta_init: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        if dim % num_heads != 0:
            raise ValueError(
                f"UncertaintyGatedFusion: dim={dim} must be divisible by num_heads={num_heads}; "
                f"choose num_heads among the divisors of {dim}."
            )
        if alpha_init <= 0:
            raise ValueError(f"UncertaintyGatedFusion: alpha_init must be > 0 (Eq. 11); got {alpha_init}.")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.text_dim = int(text_dim) if text_dim is not None else self.dim
        self.num_heads = int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.alpha_init = float(alpha_init)
        self.beta_init = float(beta_init)

        self.q_proj = nn.Linear(self.dim, self.dim, **factory)
        # no key bias: it would shift every token's score equally, which softmax ignores
        self.k_proj = nn.Linear(self.text_dim, self.dim, bias=False, **factory)
        self.v_proj = nn.Linear(self.text_dim, self.dim, **factory)
        self.out_proj = nn.Linear(self.dim, self.dim, **factory)  # the Linear of Eq. 9
        self.dropout = nn.Dropout(dropout)
        self.alpha = nn.Parameter(torch.tensor(self.alpha_init, **factory))
        self.beta = nn.Parameter(torch.tensor(self.beta_init, **factory))
        self.norm = nn.LayerNorm(self.dim, **factory) if norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier for q/k/v, exact zero for the output projection, alpha/beta to their inits."""
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)
            self.beta.fill_(self.beta_init)

    def _check(self, visual, text, uncertainty, text_padding_mask) -> None:
        owner = type(self).__name__
        check_rank(owner, "visual", visual, "(B, C, H, W)")
        check_rank(owner, "text", text, "(B, L, D)")
        check_rank(owner, "uncertainty", uncertainty, "(B, 1, Hu, Wu)",
                   fix="Pass the scorer's logits, e.g. of shape (B, 1, H/32, W/32).")
        check_channels(owner, "visual", visual, self.dim, dim=1, layout="(B, C, H, W)")
        check_channels(owner, "text", text, self.text_dim, dim=2, layout="(B, L, D)")
        check_channels(owner, "uncertainty", uncertainty, 1, dim=1, layout="(B, 1, Hu, Wu)")
        check_same_batch(owner, [("visual", visual), ("text", text), ("uncertainty", uncertainty)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def gate(self, uncertainty: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Eq. 11: ``g = sigmoid(alpha * resize(U) + beta)``, shape ``(B, 1, *size)``."""
        return self._gate(resize_logits(uncertainty, size))

    def _gate(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha * u + self.beta)  # Eq. 11, u: uncertainty logits

    def forward(
        self,
        visual: torch.Tensor | Sequence[torch.Tensor],
        text: torch.Tensor,
        uncertainty: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Return ``V+`` (B, C, H, W); for a list of levels, the list of fused levels (:meth:`fuse_levels`)."""
        if isinstance(visual, (list, tuple)):
            return self.fuse_levels(visual, text, uncertainty, text_padding_mask)
        # one level: a tensor (anything else fails the input checks)
        return self.fuse_levels([cast(torch.Tensor, visual)], text, uncertainty, text_padding_mask)[0]

    def fuse_levels(
        self,
        visuals: Sequence[torch.Tensor],
        text: torch.Tensor,
        uncertainty: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Apply Eq. 9-12 to several visual levels at once (one shared UGF, as in the paper).

        Every position attends to the text on its own and is gated and normalised on its own,
        so the positions of all levels are processed as one token sequence: the result equals
        calling :meth:`forward` level by level, with a third of the kernel launches for three
        levels.

        Shapes:
            - visuals: list of (B, C, H_i, W_i)
            - text, uncertainty, text_padding_mask: as in :meth:`forward`
            - output: list of (B, C, H_i, W_i), one per input level
        """
        if checks_enabled(self):
            for visual in visuals:
                self._check(visual, text, uncertainty, text_padding_mask)
        sizes = [(v.shape[-2], v.shape[-1]) for v in visuals]
        # flatten (a view), then swap axes (a view): torch.cat makes the one copy of the tokens
        v = torch.cat([rearrange(rearrange(x, "b c h w -> b c (h w)"), "b c n -> b n c") for x in visuals], dim=1)
        u = torch.cat([rearrange(resize_logits(uncertainty, size), "b 1 h w -> b (h w) 1") for size in sizes], dim=1)
        fused = self._fuse_tokens(v, text, u, text_padding_mask)
        out, start = [], 0
        for visual, (height, width) in zip(visuals, sizes):
            stop = start + height * width
            level = rearrange(fused[:, start:stop], "b (h w) c -> b c h w", h=height, w=width)
            out.append(in_layout_of(level, visual))  # the input's memory format, not the tokens'
            start = stop
        return out

    def _fuse_tokens(
        self, v: torch.Tensor, text: torch.Tensor, u: torch.Tensor, text_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Eq. 9-12 on tokens: v (B, N, C), u (B, N, 1) uncertainty logits -> (B, N, C)."""
        q = rearrange(self.q_proj(v), "b n (g e) -> b g n e", g=self.num_heads)
        k = rearrange(self.k_proj(text), "b l (g e) -> b g l e", g=self.num_heads)
        val = rearrange(self.v_proj(text), "b l (g e) -> b g l e", g=self.num_heads)
        keep = None
        if text_padding_mask is not None:
            keep = rearrange(keep_from_padding(text_padding_mask), "b l -> b 1 1 l")
        attended, valid = masked_attention(q, k, val, keep)
        delta = self.dropout(self.out_proj(rearrange(attended, "b g n e -> b n (g e)")))  # Eq. 9
        if valid is not None:  # a sentence of padding only injects nothing
            delta = delta * rearrange(valid, "b 1 1 1 -> b 1 1").to(delta.dtype)
        g = self._gate(u)  # Eq. 11
        return self.norm(torch.addcmul(v, g.to(delta.dtype), delta))  # Eq. 12: LN(V + g * dV), one fused op

    def extra_repr(self) -> str:
        return f"dim={self.dim}, text_dim={self.text_dim}, num_heads={self.num_heads}"
