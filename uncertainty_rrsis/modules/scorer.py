"""Referring Uncertainty Scorer (RUS), paper Eq. 3.

Axis legend
    b: batch   c: visual / embedding width (``dim``)   d: text width (``text_dim``)
    h, w: rows / columns of the stride-32 map   n: h * w positions   l: text tokens
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from .._attention import keep_from_padding, masked_attention
from .._contracts import check_channels, check_padding_mask, check_rank, check_same_batch, checks_enabled
from .._ops import inverse_sqrt

__all__ = ["ReferringUncertaintyScorer"]


def _identity_(linear: nn.Linear) -> None:
    """Initialise a square ``nn.Linear`` to the identity map (zero bias)."""
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        if linear.bias is not None:
            linear.bias.zero_()


class ReferringUncertaintyScorer(nn.Module):
    r"""Predicts a pixel-wise referring-uncertainty logit map ``U`` (paper Eq. 3).

    .. math::

        V' = V W_v,\quad T' = T W_t,\quad
        A = \operatorname{softmax}_{\text{text}}(\gamma\, V' T'^\top),\quad
        \tilde T = A T',\quad U = \operatorname{MLP}([V ; \tilde T])

    Every position of the stride-32 visual map attends over the sentence on its own (no
    mixing between positions), so the score of a position depends only on that position's
    feature and the text. Padded tokens get zero attention; a sentence made only of padding
    gives :math:`\tilde T = 0` rather than NaN.

    Args:
        dim: visual width ``C`` (channels of ``visual``).
        text_dim: width of ``text``; defaults to ``dim``. When it differs from ``dim``, ``W_t``
            maps it to ``dim`` and starts from Xavier init instead of the identity.
        hidden_dim: hidden width of the scoring MLP; defaults to ``dim``.
        device, dtype: factory arguments for the parameters.

    Attributes:
        dim (int): visual width ``C``.
        text_dim (int): width of the text features.
        hidden_dim (int): hidden width of the scoring MLP.
        gamma (nn.Parameter): learnable attention temperature, a scalar starting at ``1/sqrt(dim)``.

    Shapes:
        - visual: (B, C, H, W) stride-32 visual map, C = ``dim``
        - text: (B, L, D) token features, D = ``text_dim``
        - text_padding_mask: (B, L) bool, True = padding (ignored); None = no padding
        - output: (B, 1, H, W) uncertainty logits ``U`` (``sigmoid(U)`` is ``U^p``)
    """

    def __init__(
        self,
        dim: int,
        *,
        text_dim: int | None = None,
        hidden_dim: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.text_dim = int(text_dim) if text_dim is not None else self.dim
        self.hidden_dim = int(hidden_dim) if hidden_dim is not None else self.dim

        self.visual_proj = nn.Linear(self.dim, self.dim, **factory)  # W_v
        self.text_proj = nn.Linear(self.text_dim, self.dim, **factory)  # W_t
        self.gamma = nn.Parameter(torch.tensor(inverse_sqrt(self.dim), **factory))
        self.mlp = nn.Sequential(
            nn.Linear(2 * self.dim, self.hidden_dim, **factory),
            nn.GELU(),
            nn.Linear(self.hidden_dim, 1, **factory),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_v (and W_t when square) start at the identity; gamma at 1/sqrt(dim)."""
        _identity_(self.visual_proj)
        if self.text_dim == self.dim:
            _identity_(self.text_proj)
        else:
            nn.init.xavier_uniform_(self.text_proj.weight)
            nn.init.zeros_(self.text_proj.bias)
        with torch.no_grad():
            self.gamma.fill_(inverse_sqrt(self.dim))

    def _check(self, visual: torch.Tensor, text: torch.Tensor, text_padding_mask: torch.Tensor | None) -> None:
        owner = type(self).__name__
        check_rank(owner, "visual", visual, "(B, C, H, W)", fix="Pass the stride-32 visual map in NCHW.")
        check_rank(owner, "text", text, "(B, L, D)")
        check_channels(owner, "visual", visual, self.dim, dim=1, layout="(B, C, H, W)",
                       fix=f"Build the scorer with dim={int(visual.shape[1])} or project the map.")
        check_channels(owner, "text", text, self.text_dim, dim=2, layout="(B, L, D)",
                       fix=f"Build the scorer with text_dim={int(text.shape[2])}.")
        check_same_batch(owner, [("visual", visual), ("text", text)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def forward(
        self,
        visual: torch.Tensor,
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score every position of ``visual`` against the sentence; returns logits (B, 1, H, W)."""
        if checks_enabled(self):
            self._check(visual, text, text_padding_mask)
        height, width = visual.shape[-2:]
        v = rearrange(visual, "b c h w -> b (h w) c")
        v_proj = rearrange(self.visual_proj(v), "b n c -> b 1 n c")  # V', one head
        t_proj = rearrange(self.text_proj(text), "b l c -> b 1 l c")  # T'
        keep = None
        if text_padding_mask is not None:
            keep = rearrange(keep_from_padding(text_padding_mask), "b l -> b 1 1 l")
        # A = softmax over the text of gamma V' T'^T, T~ = A T' (gamma scales the queries, scale=1)
        attended, valid = masked_attention(self.gamma * v_proj, t_proj, t_proj, keep, scale=1.0)
        if valid is not None:  # a sentence made only of padding gives T~ = 0
            attended = attended * valid.to(attended.dtype)
        attended = rearrange(attended, "b 1 n c -> b n c")
        u = self.mlp(torch.cat([v, attended], dim=-1))  # (b, n, 1)
        return rearrange(u, "b (h w) 1 -> b 1 h w", h=height, w=width)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, text_dim={self.text_dim}, hidden_dim={self.hidden_dim}"
