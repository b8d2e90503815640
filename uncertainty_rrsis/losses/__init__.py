"""Losses of CroBIM-U: the online error loss (Eq. 4-8), the segmentation loss and the objective (Eq. 17-18).

Segmentation losses are found by name through one registry (:func:`register_loss`, :func:`get_loss`,
:func:`list_losses`), so a new ``L_seg`` is added in one place and chosen with ``--seg-loss``.
"""

from .objective import RiskGuidedLoss, RiskGuidedLossOutput
from .online_error import OnlineErrorLoss
from .registry import get_loss, list_losses, register_loss
from .segmentation import BCEDiceLoss, dice_loss

__all__ = [
    "OnlineErrorLoss", "RiskGuidedLoss", "RiskGuidedLossOutput", "BCEDiceLoss", "dice_loss",
    "register_loss", "get_loss", "list_losses",
]
