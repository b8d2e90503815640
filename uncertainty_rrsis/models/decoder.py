"""The reference model's Mask2Former-style decoder, behind the library's decoder contract.

``MaskDecoder(features, text, text_padding_mask) -> (coarse_logits, mask_feature)``: the
cross-modal deformable pixel decoder (:class:`CrossModalPixelDecoder`, block Phi of Eq. 1)
followed by the text-conditioned mask head (:class:`TextConditionedMaskHead`) that gives the
coarse foreground logit ``P_fg`` at stride 4. ``RiskGuidedDecoder`` wraps it unchanged.

Axis legend
    b: batch   d: width (``dim``)   t: text tokens   y, x: rows / columns
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._contracts import check_channels, check_padding_mask, check_rank, check_same_batch, checks_enabled, trust_inputs
from .mask_head import TextConditionedMaskHead
from .pixel_decoder import CrossModalPixelDecoder

__all__ = ["MaskDecoder"]


class MaskDecoder(nn.Module):
    """Mask2Former-style referring decoder: text-aware deformable pixel decoder + mask head.

    Spatial sizes are free (not necessarily powers of two, e.g. 15x15 at stride 32 for a
    480-px image, or odd sizes like 7x5): every upsampling resizes to the exact size of the
    finer level (bilinear, ``align_corners=False``).

    Args:
        dim: width ``D`` of every input level and of the text (256 in the paper); divisible
            by ``num_heads`` and by 4.
        num_layers: pixel-decoder layers (6).
        num_heads: attention heads everywhere (8).
        num_points: deformable sampling points per head and level (4).
        ffn_dim: feed-forward width (1024).
        num_mask_layers: masked-attention layers of the mask head (3).
        dropout: dropout in attention, FFN and residual branches (0).
        device, dtype: factory arguments.

    Attributes:
        dim, num_layers, num_heads, num_points, ffn_dim, num_mask_layers (int);
        num_inputs (= 4 input levels), num_levels (= 3 levels attended by deformable attention);
        pixel_decoder (:class:`CrossModalPixelDecoder`), mask_head (:class:`TextConditionedMaskHead`).

    Shapes:
        - features: list of 4 maps (B, D, H_s, W_s), finest first (strides 4, 8, 16, 32)
        - text: (B, T, D)
        - text_padding_mask: None or (B, T) bool, True = padding
        - output: ``(coarse_logits, mask_feature)``: (B, 1, H4, W4) foreground logits and
          (B, D, H4, W4) mask feature ``F``
    """

    num_inputs: int = 4
    num_levels: int = 3

    def __init__(
        self,
        dim: int = 256,
        *,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        num_mask_layers: int = 3,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        if dim % num_heads != 0 or dim % 4 != 0:
            raise ValueError(
                f"MaskDecoder: dim={dim} must be divisible by num_heads={num_heads} and by 4 "
                f"(sine positional encoding); e.g. dim=256 with num_heads=8."
            )
        for name, value in (("num_layers", num_layers), ("num_mask_layers", num_mask_layers)):
            if value < 0:
                raise ValueError(f"MaskDecoder: {name} must be >= 0; got {value}.")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.num_points = int(num_points)
        self.ffn_dim = int(ffn_dim)
        self.num_mask_layers = int(num_mask_layers)
        self.pixel_decoder = CrossModalPixelDecoder(
            self.dim, num_layers=self.num_layers, num_heads=self.num_heads, num_points=self.num_points,
            ffn_dim=self.ffn_dim, dropout=dropout, **factory,
        )
        self.mask_head = TextConditionedMaskHead(
            self.dim, num_layers=self.num_mask_layers, num_heads=self.num_heads, ffn_dim=self.ffn_dim,
            num_levels=self.num_levels, dropout=dropout, **factory,
        )
        trust_inputs(self.pixel_decoder, self.mask_head)  # MaskDecoder checks at its entry

    def _check(
        self,
        features: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(features, (list, tuple)) or len(features) != self.num_inputs:
            got = f"{len(features)} items" if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(
                f"{owner}: `features` must be a list of {self.num_inputs} maps (B, D, H, W), finest first "
                f"(strides 4, 8, 16, 32); got {got}."
            )
        layout = f"(B, {self.dim}, H, W)"
        for i, f in enumerate(features):
            check_rank(owner, f"features[{i}]", f, layout)
            check_channels(owner, f"features[{i}]", f, self.dim, dim=1, layout=layout,
                           fix="Project every level to `dim` channels first (1x1 conv + GroupNorm).")
        for i in range(1, self.num_inputs):
            fine, coarse = features[i - 1].shape[-2:], features[i].shape[-2:]
            if coarse[0] > fine[0] or coarse[1] > fine[1]:
                raise ValueError(
                    f"{owner}: `features` must be ordered finest first (strides 4, 8, 16, 32); "
                    f"features[{i}] is {tuple(coarse)} but features[{i - 1}] is {tuple(fine)}."
                )
        check_rank(owner, "text", text, "(B, T, D)")
        check_channels(owner, "text", text, self.dim, dim=2, layout=f"(B, T, {self.dim})",
                       fix="Project the text encoder's output to `dim` first.")
        check_same_batch(owner, [(f"features[{i}]", f) for i, f in enumerate(features)] + [("text", text)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(coarse_logits (B, 1, H4, W4), mask_feature (B, D, H4, W4))``."""
        if checks_enabled(self):
            self._check(features, text, text_padding_mask)
        mask_feature, levels = self.pixel_decoder(features, text, text_padding_mask)
        coarse_logits = self.mask_head(mask_feature, levels, text, text_padding_mask)
        return coarse_logits, mask_feature

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_layers={self.num_layers}, num_heads={self.num_heads}, "
            f"num_points={self.num_points}, ffn_dim={self.ffn_dim}, num_mask_layers={self.num_mask_layers}"
        )
