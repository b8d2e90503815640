"""Online error supervision of the uncertainty map, paper Eq. 4-8.

Axis legend
    b: batch   h, w: rows / columns of the target mask
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from .._contracts import check_channels, check_rank, check_same_batch, checks_enabled
from .._ops import gaussian_blur, gaussian_taps, resize_logits

__all__ = ["OnlineErrorLoss", "as_target_mask"]


def as_target_mask(target: torch.Tensor, owner: str = "loss") -> torch.Tensor:
    """Bring a (B, H, W) or (B, 1, H, W) bool / {0, 1} mask to a (B, 1, H, W) bool tensor."""
    if checks_enabled():
        if not isinstance(target, torch.Tensor) or target.dim() not in (3, 4):
            shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise ValueError(f"{owner}: `target` must have shape (B, H, W) or (B, 1, H, W); got {shape}.")
        if target.dim() == 4:
            check_channels(owner, "target", target, 1, dim=1, layout="(B, 1, H, W)")
    if target.dim() == 3:
        target = rearrange(target, "b h w -> b 1 h w")
    if target.dtype == torch.bool:
        return target
    return target > 0.5


class OnlineErrorLoss(nn.Module):
    r"""Teaches the uncertainty map to predict the model's own errors (Eq. 4-8).

    .. math::

        \hat y = \operatorname{sg}[P_{fg} > 0],\quad e = [\hat y \ne y],\quad
        z = e \text{ or } \operatorname{Blur}(e),\\
        \mathcal L_{unc} = \frac{1}{BHW}\sum w_{sample}\, w_{pixel}\,
        \operatorname{BCE}(\tilde U, z)

    with :math:`w_{sample} = 1 + \lambda_s [\operatorname{IoU}(\hat y, y) < \delta]` (an empty
    union counts as IoU 1 here) and :math:`w_{pixel} = 1 + z\,(r - 1)`, :math:`r = (n_0 + \epsilon)
    / (n_1 + \epsilon)`, :math:`n_1 = \sum z`, :math:`n_0 = \sum (1 - z)` per sample (for a binary
    ``z`` this is ``r`` on error pixels and 1 elsewhere). ``U`` and ``P_fg`` are resized
    bilinearly, on logits, to the target's resolution. No gradient reaches ``seg_logits``.
    The BCE runs in float32 at least (float64 inputs stay float64).

    Args:
        hard_sample_weight: ``lambda_s``, extra weight of a sample whose IoU is below the threshold.
        hard_iou_threshold: ``delta``.
        eps: ``epsilon`` of the positive/negative balance.
        blur_kernel_size: odd Gaussian kernel to soften ``e`` into ``z``; None keeps ``z = e``.
        warmup_steps: the loss is zero (still attached to the graph) while ``step < warmup_steps``.
        pixel_weighting: apply ``w_pixel`` of Eq. 8 (default, as in the paper); False weighs every
            pixel 1 (only ``w_sample`` remains), an option for studying the loss.

    Shapes:
        - uncertainty: (B, 1, Hu, Wu) uncertainty logits ``U``
        - seg_logits: (B, 1, Hs, Ws) foreground logits ``P_fg``
        - target: (B, H, W) or (B, 1, H, W), bool or {0, 1}
        - step: int, 0-dim tensor or None (None: never in warm-up)
        - output: scalar
    """

    def __init__(
        self,
        *,
        hard_sample_weight: float = 1.0,
        hard_iou_threshold: float = 0.5,
        eps: float = 1e-6,
        blur_kernel_size: int | None = None,
        warmup_steps: int = 0,
        pixel_weighting: bool = True,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        self.hard_sample_weight = float(hard_sample_weight)
        self.hard_iou_threshold = float(hard_iou_threshold)
        self.eps = float(eps)
        self.blur_kernel_size = None if blur_kernel_size is None else int(blur_kernel_size)
        self.warmup_steps = int(warmup_steps)
        self.pixel_weighting = bool(pixel_weighting)
        self.blur_taps = gaussian_taps(self.blur_kernel_size or 1)

    def _check(self, uncertainty: torch.Tensor, seg_logits: torch.Tensor, target: torch.Tensor) -> None:
        owner = type(self).__name__
        check_rank(owner, "uncertainty", uncertainty, "(B, 1, Hu, Wu)")
        check_rank(owner, "seg_logits", seg_logits, "(B, 1, Hs, Ws)")
        check_channels(owner, "uncertainty", uncertainty, 1, dim=1, layout="(B, 1, Hu, Wu)")
        check_channels(owner, "seg_logits", seg_logits, 1, dim=1, layout="(B, 1, Hs, Ws)")
        check_same_batch(owner, [("uncertainty", uncertainty), ("seg_logits", seg_logits), ("target", target)])

    def error_target(self, seg_logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4-6 and the sample weight of Eq. 7, without gradient.

        Args:
            seg_logits: (B, 1, H, W) logits already at the target's resolution.
            target: (B, 1, H, W) bool.

        Returns:
            ``z`` (B, 1, H, W) in [0, 1] and ``w_sample`` (B,), in the dtype of ``seg_logits``.
        """
        with torch.no_grad():
            pred = seg_logits.detach() > 0  # y_hat
            error = (pred != target).to(seg_logits.dtype if seg_logits.is_floating_point() else torch.float32)  # e
            z = gaussian_blur(error, self.blur_taps) if self.blur_kernel_size is not None else error
            inter = reduce((pred & target).float(), "b 1 h w -> b", "sum")
            union = reduce((pred | target).float(), "b 1 h w -> b", "sum")
            iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))
            w_sample = 1.0 + self.hard_sample_weight * (iou < self.hard_iou_threshold).to(z.dtype)
        return z, w_sample

    def forward(
        self,
        uncertainty: torch.Tensor,
        seg_logits: torch.Tensor,
        target: torch.Tensor,
        step: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the scalar ``L_unc``."""
        target = as_target_mask(target, type(self).__name__)
        if checks_enabled(self):
            self._check(uncertainty, seg_logits, target)
        if isinstance(step, int) and step < self.warmup_steps:
            return uncertainty.sum() * 0.0
        size = target.shape[-2:]
        dtype = torch.promote_types(uncertainty.dtype, torch.float32)  # float32 at least, float64 kept
        logits_u = resize_logits(uncertainty, size).to(dtype)  # U~
        z, w_sample = self.error_target(resize_logits(seg_logits.detach(), size).to(dtype), target)
        with torch.no_grad():
            n1 = reduce(z, "b 1 h w -> b 1 1 1", "sum")
            n0 = reduce(1.0 - z, "b 1 h w -> b 1 1 1", "sum")
            ratio = (n0 + self.eps) / (n1 + self.eps)
            w_pixel = 1.0 + z * (ratio - 1.0) if self.pixel_weighting else torch.ones_like(z)
            weight = rearrange(w_sample, "b -> b 1 1 1") * w_pixel
        bce = F.binary_cross_entropy_with_logits(logits_u, z, reduction="none")
        loss = (weight * bce).mean()
        if isinstance(step, torch.Tensor):
            loss = loss * (step >= self.warmup_steps).to(loss.dtype)
        return loss

    def extra_repr(self) -> str:
        return (
            f"hard_sample_weight={self.hard_sample_weight}, hard_iou_threshold={self.hard_iou_threshold}, "
            f"blur_kernel_size={self.blur_kernel_size}, warmup_steps={self.warmup_steps}, "
            f"pixel_weighting={self.pixel_weighting}"
        )
