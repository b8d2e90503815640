"""The training objective of CroBIM-U, paper Eq. 17-18.

``L = L_seg(P_fg) + lambda_unc * L_unc + lambda_ref * L_seg(P_ref)``

The paper sets ``lambda_ref = 0`` "when the auxiliary refinement supervision is disabled". Read
literally, ``L_seg(P_fg)`` alone would then give UDLR's head no gradient at all (its output enters
only ``P_ref``), so refinement would silently do nothing. This library reads it as: without the
auxiliary term, ``L_seg`` supervises the model's final logits, ``P_ref`` when refinement is on:
``L = L_seg(P_ref) + lambda_unc * L_unc``. The coarse logits still receive the gradient (``P_ref =
P_fg + M * Delta``) and still define the errors that ``L_unc`` teaches ``U``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._ops import resize_logits
from .online_error import OnlineErrorLoss, as_target_mask
from .segmentation import BCEDiceLoss

__all__ = ["RiskGuidedLoss", "RiskGuidedLossOutput"]


class RiskGuidedLossOutput(NamedTuple):
    """The total loss and its parts (each a scalar tensor; absent parts are exact zeros).

    Attributes:
        total: the objective to back-propagate.
        seg: ``L_seg`` of the main term: on the coarse logits ``P_fg``, or on the refined logits
            ``P_ref`` when ``lambda_ref = 0`` and refinement is on (see the module docstring).
        unc: ``L_unc`` (unweighted).
        ref: ``L_seg(P_ref)`` on the refined logits (unweighted).
        risk: the loss of the optional per-sample risk head (unweighted): BCE of its failure logits
            against the failures plus BCE of its IoU logits against the IoU; None without the head.
        pixel_risk: the loss of the optional pixel risk head (unweighted): ``L_unc``'s weighting
            (Eq. 4-8) against the errors of the final prediction; None without the head.
    """

    total: torch.Tensor
    seg: torch.Tensor
    unc: torch.Tensor
    ref: torch.Tensor
    risk: torch.Tensor | None = None
    pixel_risk: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        """The values as Python floats, for logging (synchronises with the device)."""
        return {f"loss/{k}": float(v.detach()) for k, v in self._asdict().items() if v is not None}


class RiskGuidedLoss(nn.Module):
    """Eq. 18 over a :class:`~uncertainty_rrsis.RiskGuidedOutput` and a target mask.

    Logits of any resolution are resized (bilinear, on logits) to the target's resolution.
    The uncertainty term is skipped when the output has no uncertainty (the Base row), and
    the refinement term when it has no refinement mask. With ``lambda_ref = 0`` and refinement
    on, the main ``L_seg`` term supervises the refined logits, so that UDLR still learns.

    Args:
        lambda_unc: weight of ``L_unc``.
        lambda_ref: weight of ``L_seg(P_ref)``.
        seg_loss: the module used for ``L_seg`` (called as ``seg_loss(logits, target)``);
            defaults to :class:`BCEDiceLoss`.
        uncertainty_loss: the ``L_unc`` module; defaults to ``OnlineErrorLoss(warmup_steps=...)``.
        warmup_steps: warm-up of the default ``L_unc`` (ignored when ``uncertainty_loss`` is given).
        lambda_risk: weight of the risk heads' losses, when the output carries ``risk`` /
            ``quality`` or ``error_map`` (options beyond the paper): BCE of the failure logits against
            ``IoU(P > 0, y) < fail_below`` plus BCE of the IoU logits against that IoU; and the
            online error loss of the error map against the errors of the final prediction.
        fail_below: the IoU below which a sample has failed, for the risk head.

    Shapes:
        - output: RiskGuidedOutput with logits (B, 1, H', W') and uncertainty (B, 1, h, w)
        - target: (B, H, W) or (B, 1, H, W), bool or {0, 1}
        - step: int, 0-dim tensor or None
    """

    def __init__(
        self,
        *,
        lambda_unc: float = 1.0,
        lambda_ref: float = 1.0,
        seg_loss: nn.Module | None = None,
        uncertainty_loss: nn.Module | None = None,
        warmup_steps: int = 0,
        lambda_risk: float = 1.0,
        fail_below: float = 0.5,
    ) -> None:
        super().__init__()
        self.lambda_risk = float(lambda_risk)
        self.fail_below = float(fail_below)
        self.lambda_unc = float(lambda_unc)
        self.lambda_ref = float(lambda_ref)
        self.seg_loss = seg_loss if seg_loss is not None else BCEDiceLoss()
        self.uncertainty_loss = (
            uncertainty_loss if uncertainty_loss is not None else OnlineErrorLoss(warmup_steps=warmup_steps)
        )
        self.pixel_risk_loss = OnlineErrorLoss()

    def forward(self, output, target: torch.Tensor, step: int | torch.Tensor | None = None) -> RiskGuidedLossOutput:
        """Return the total of Eq. 18 and its parts; ``step`` drives the warm-up of ``L_unc``."""
        refined = output.refine_mask is not None
        main = output.logits if (refined and self.lambda_ref == 0) else output.coarse_logits
        seg = self.seg_loss(main, target)
        zero = seg.new_zeros(())
        unc = zero
        if output.uncertainty is not None:
            unc = self.uncertainty_loss(output.uncertainty, output.coarse_logits, target, step=step)
        ref = zero
        if refined and self.lambda_ref != 0:
            ref = self.seg_loss(output.logits, target)
        total = seg + self.lambda_unc * unc + self.lambda_ref * ref
        risk_loss = pixel_loss = None
        if output.risk is not None or output.quality is not None:
            failed, iou = _risk_targets(output.logits, as_target_mask(target, type(self).__name__)[:, 0],
                                       fail_below=self.fail_below)
            risk_loss = zero
            if output.risk is not None:
                risk_loss = risk_loss + F.binary_cross_entropy_with_logits(output.risk.float(), failed)
            if output.quality is not None:
                risk_loss = risk_loss + F.binary_cross_entropy_with_logits(output.quality.float(), iou)
            total = total + self.lambda_risk * risk_loss
        if output.error_map is not None:
            pixel_loss = self.pixel_risk_loss(output.error_map, output.logits, target)
            total = total + self.lambda_risk * pixel_loss
        return RiskGuidedLossOutput(total, seg, unc, ref, risk_loss, pixel_loss)


def _risk_targets(logits: torch.Tensor, target: torch.Tensor, *, fail_below: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(failed (B,) float, IoU (B,) float)`` of ``logits > 0`` against ``target`` (no gradient).

    Shapes:
        logits: (B, 1, H', W'), resized to the target's size; target: (B, H, W) bool.
    """
    with torch.no_grad():
        pred = resize_logits(logits.detach().float(), target.shape[-2:])[:, 0] > 0
        inter = (pred & target).flatten(1).sum(1).float()
        union = (pred | target).flatten(1).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(union))
        return (iou < fail_below).float(), iou
