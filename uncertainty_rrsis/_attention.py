"""The one masked attention of the library, and the one conversion of text masks.

Three places attend from visual positions (or queries) to padded text: RUS (Eq. 3), UGF
(Eq. 9) and the reference model's decoder. All of them go through :func:`masked_attention`,
and every conversion between the library's padding mask (bool, True = padding) and a keep
mask (True / 1 = token, the Hugging Face convention) goes through :func:`keep_from_padding`
and :func:`padding_from_keep`.

Rows with nothing to attend to (a sentence made only of padding) would make softmax return
NaN. Here such a row attends to every key instead, and the caller learns which rows were empty
(``valid``) to zero their contribution where it must be zero, after its own output projection.

Axis legend
    b: batch   h: attention heads   q: queries   k: keys   e: per-head width   l: text tokens
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["keep_from_padding", "padding_from_keep", "masked_attention"]


def keep_from_padding(text_padding_mask: torch.Tensor) -> torch.Tensor:
    """The library's padding mask (B, L) bool, True = padding, as a keep mask (B, L) bool, True = token."""
    return ~text_padding_mask


def padding_from_keep(attention_mask: torch.Tensor) -> torch.Tensor:
    """A keep mask (B, L), 1 / True = token (Hugging Face ``attention_mask``), as the library's padding mask."""
    return attention_mask == 0


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    keep: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention with a boolean keep mask; rows without any key stay finite.

    ``softmax(scale * q k^T + mask) v`` through ``F.scaled_dot_product_attention`` (so the fused
    kernels are used where the device has them). A row whose keys are all masked attends to
    every key; ``valid`` says which rows had at least one key, so the caller can zero them.

    Args:
        query, key, value: the projected, head-split tensors.
        keep: True where a query may attend to a key; None attends everywhere.
        scale: the logit scale; None is ``1 / sqrt(e)``.
        dropout_p: dropout on the attention probabilities (pass 0 in eval mode).

    Shapes:
        - query: (B, H, Q, E);  key, value: (B, H, K, E)
        - keep: bool, broadcastable to (B, H, Q, K), e.g. (B, 1, 1, K) for a text padding mask
        - output: (B, H, Q, E), and ``valid`` (bool, ``keep``'s shape with K -> 1) or None
    """
    if keep is None:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale), None
    valid = keep.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=keep | ~valid, dropout_p=dropout_p, scale=scale)
    return out, valid
