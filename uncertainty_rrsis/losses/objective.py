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
        risk: the BCE of the optional per-sample risk head against the failures (unweighted), or
            None without a risk head.
    """

    total: torch.Tensor
    seg: torch.Tensor
    unc: torch.Tensor
    ref: torch.Tensor
    risk: torch.Tensor | None = None

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
        lambda_risk: weight of the risk head's loss, when the output carries ``risk`` (an option
            beyond the paper): BCE of the failure logits against ``IoU(P > 0, y) < fail_below``.
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
        risk = output.risk
        if risk is None:
            return RiskGuidedLossOutput(total, seg, unc, ref)
        risk_loss = self._risk_loss(risk, output.logits, target)
        return RiskGuidedLossOutput(total + self.lambda_risk * risk_loss, seg, unc, ref, risk_loss)

    def _risk_loss(self, risk: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE of the failure logits (B,) against ``IoU(logits > 0, target) < fail_below`` (no gradient to logits)."""
        target = as_target_mask(target, type(self).__name__)
        with torch.no_grad():
            pred = resize_logits(logits.detach().float(), target.shape[-2:]) > 0
            inter = (pred & target).flatten(1).sum(1).float()
            union = (pred | target).flatten(1).sum(1).float()
            iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(union))
            failed = (iou < self.fail_below).to(torch.float32)
        return F.binary_cross_entropy_with_logits(risk.float(), failed)
