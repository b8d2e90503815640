"""Small converters between the library's conventions and those of decoders found in the field.

:class:`~uncertainty_rrsis.RiskGuidedDecoder` speaks one convention: visual levels finest first,
text padding masks as bool with True = padding, one foreground logit channel. Decoders written
for LAVT, RMSIN, CADFormer, CARIS or Mask2Former speak others. The functions here translate, so that such
a decoder is wrapped as it is, through the wrapper's ``call`` and ``unpack`` arguments::

    RiskGuidedDecoder(decoder, dim=(128, 256, 512, 1024),
                      call=call_coarsest_first,      # decoder(f[3], f[2], f[1], f[0])
                      unpack=foreground_logit)       # (B, 2, H, W) -> (B, 1, H, W)

Every function is a plain module-level function (so a wrapped model still pickles) and works
under ``torch.compile`` and ``torch.export``.

Axis legend
    b: batch   l: text tokens   d: text width   h, w: spatial
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from ._attention import keep_from_padding, padding_from_keep

__all__ = [
    "foreground_logit",
    "keep_mask",
    "padding_mask",
    "call_coarsest_first",
    "call_with_keep_mask",
    "call_text_channels_first",
]


def foreground_logit(x: torch.Tensor | Sequence) -> torch.Tensor | tuple:
    """Two-class logits to the one foreground logit the library works with.

    ``P_fg = x[:, 1] - x[:, 0]``, so that ``sigmoid(P_fg)`` equals the softmax probability of
    class 1 (foreground) and ``P_fg > 0`` exactly where ``argmax`` picks class 1. This is how
    LAVT / RMSIN-style decoders (two output channels, cross-entropy training) plug into the
    sigmoid-based losses and modules.

    For a tuple or list whose first item is such logits, only the first item is converted and a
    tuple with the other items passed through is returned, so ``unpack=foreground_logit`` also
    handles a decoder that returns ``(two_class_logits, mask_feature)``.

    Shapes:
        - x: (B, 2, H, W), or a sequence whose first item is (B, 2, H, W)
        - output: (B, 1, H, W), or a tuple ``(foreground (B, 1, H, W), rest...)``
    """
    if isinstance(x, (tuple, list)):
        if len(x) == 0:
            raise ValueError("foreground_logit: got an empty sequence; expected (two_class_logits, ...).")
        return (foreground_logit(x[0]), *x[1:])
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"foreground_logit: expected two-class logits of shape (B, 2, H, W) (channel 0 background, "
            f"channel 1 foreground); got {got}."
        )
    return x[:, 1:2] - x[:, 0:1]


def keep_mask(text_padding_mask: torch.Tensor | None, text: torch.Tensor | None = None) -> torch.Tensor:
    """The library's padding mask (bool, True = padding) as a Hugging Face keep-mask (long, 1 = token).

    With ``text_padding_mask=None`` (no padding) the keep-mask is all ones; ``text`` then gives
    its shape ``(B, L)`` and device.

    Shapes:
        - text_padding_mask: (B, L) bool, True = padding; or None
        - text: (B, L, D), only read when the mask is None
        - output: (B, L) long, 1 = token, 0 = padding
    """
    if text_padding_mask is None:
        if text is None:
            raise ValueError("keep_mask: with text_padding_mask=None pass `text` (B, L, D) to give the shape.")
        return torch.ones(text.shape[:2], dtype=torch.long, device=text.device)
    if text_padding_mask.dtype != torch.bool:
        raise ValueError(
            f"keep_mask: expected a bool padding mask (True = padding); got dtype {text_padding_mask.dtype}. "
            "A mask that is already 1 = token needs no conversion."
        )
    return keep_from_padding(text_padding_mask).long()


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A Hugging Face keep-mask (1 = token, any integer or bool dtype) as the library's padding mask.

    Shapes:
        - attention_mask: (B, L), 1 / True = token, 0 / False = padding
        - output: (B, L) bool, True = padding
    """
    if attention_mask.is_floating_point():
        raise ValueError(
            f"padding_mask: expected an integer or bool keep-mask (1 = token); got dtype {attention_mask.dtype}."
        )
    return padding_from_keep(attention_mask)


def call_coarsest_first(
    decoder: nn.Module,
    features: Sequence[torch.Tensor],
    text: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
):
    """Call ``decoder(f[-1], ..., f[0])``: the levels as positional arguments, coarsest first, no text.

    The calling convention of LAVT / RMSIN's decoder (``forward(x_c4, x_c3, x_c2, x_c1)``), whose
    language was fused inside the backbone. Pass it as ``RiskGuidedDecoder(..., call=call_coarsest_first)``.
    """
    return decoder(*reversed(list(features)))


def call_with_keep_mask(
    decoder: nn.Module,
    features: Sequence[torch.Tensor],
    text: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
):
    """Call ``decoder(features, text, keep_mask)`` with the Hugging Face keep-mask (long, 1 = token).

    The calling convention of CARIS / Mask2Former-style decoders that take BERT's
    ``attention_mask``. Pass it as ``RiskGuidedDecoder(..., call=call_with_keep_mask)``.
    """
    return decoder(list(features), text, keep_mask(text_padding_mask, text))


def call_text_channels_first(
    decoder: nn.Module,
    features: Sequence[torch.Tensor],
    text: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
):
    """Call ``decoder(text_t, f[-1], ..., f[0])``: the words channel-first, then the levels coarsest first.

    The calling convention of CADFormer's ``TCMD`` (``forward(lan, x_c4, x_c3, x_c2, x_c1)`` with
    ``lan`` of shape (B, D, L)), which reads no padding mask. Pass it as
    ``RiskGuidedDecoder(..., call=call_text_channels_first)``.

    Shapes:
        - text: (B, L, D), passed on as (B, D, L)
    """
    return decoder(rearrange(text, "b l d -> b d l"), *reversed(list(features)))
