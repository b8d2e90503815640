"""The segmentation loss ``L_seg`` of Eq. 17-18: sigmoid BCE + Dice on one foreground logit.

Axis legend
    b: batch   h, w: rows / columns of the target mask
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from .._ops import resize_logits
from .online_error import as_target_mask

__all__ = ["BCEDiceLoss", "dice_loss"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Per-sample soft Dice loss ``1 - (2|p t| + s) / (|p| + |t| + s)``, averaged over the batch.

    Shapes:
        logits: (B, 1, H, W); target: (B, 1, H, W) float in [0, 1] -> scalar
    """
    prob = torch.sigmoid(logits)
    inter = reduce(prob * target, "b 1 h w -> b", "sum")
    total = reduce(prob, "b 1 h w -> b", "sum") + reduce(target, "b 1 h w -> b", "sum")
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + dice_weight * Dice`` on a single foreground logit map.

    The logits are resized bilinearly (on logits) to the target's resolution and the loss is
    computed in float32.

    Shapes:
        - logits: (B, 1, Hs, Ws)
        - target: (B, H, W) or (B, 1, H, W), bool or {0, 1}
        - output: scalar
    """

    def __init__(self, *, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss."""
        mask = as_target_mask(target, type(self).__name__).float()
        logits = resize_logits(logits, mask.shape[-2:]).float()
        bce = F.binary_cross_entropy_with_logits(logits, mask)
        return self.bce_weight * bce + self.dice_weight * dice_loss(logits, mask, smooth=self.smooth)
