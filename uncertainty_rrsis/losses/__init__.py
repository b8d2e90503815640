"""Losses of CroBIM-U: the online error loss (Eq. 4-8) and the segmentation loss (Eq. 17-18)."""

from .objective import RiskGuidedLoss, RiskGuidedLossOutput
from .online_error import OnlineErrorLoss
from .segmentation import BCEDiceLoss, dice_loss

__all__ = ["OnlineErrorLoss", "RiskGuidedLoss", "RiskGuidedLossOutput", "BCEDiceLoss", "dice_loss"]
