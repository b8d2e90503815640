"""Uncertainty-Driven Local Refinement (UDLR), paper Eq. 13-16.

Axis legend
    b: batch   c: mask-feature width (``feature_dim``)   h, w: rows / columns of the coarse logits
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .._contracts import check_channels, check_rank, check_same_batch, checks_enabled
from .._ops import gaussian_blur, gaussian_taps, resize_logits

__all__ = ["UncertaintyDrivenRefinement", "MASK_SOURCES"]

#: What the soft mask ``M`` can threshold (see ``mask_source``).
MASK_SOURCES: tuple[str, ...] = ("uncertainty", "margin", "max")


class UncertaintyDrivenRefinement(nn.Module):
    r"""Corrects the coarse mask logits where the uncertainty is high (Eq. 13-16).

    .. math::

        U^p = \sigma(\operatorname{resize}(U, H, W)),\quad
        M = \operatorname{sg}\big[\sigma((\operatorname{Blur}(U^p) - \tau) / t)\big],\\
        \Delta = R([F ; P_{fg} ; U^p]),\quad
        P_{ref} = P_{fg} + M \odot \Delta

    ``R`` is conv3x3-ReLU-conv3x3-ReLU-conv1x1; its last convolution starts at exactly zero,
    so at initialisation ``P_ref == P_fg`` bit for bit. ``M`` carries no gradient (Eq. 14);
    gradients do reach ``U`` through the ``U^p`` input of ``R``, and ``P_fg`` and ``F``
    receive gradients as usual. Refinement runs at the resolution of the coarse logits it is
    given; upsample the result to the image size afterwards.

    Args:
        feature_dim: channels of the mask feature ``F``.
        hidden_dim: width of ``R``'s hidden convolutions.
        tau: threshold of the soft mask (Eq. 13).
        temperature: temperature ``t`` of the soft mask (> 0).
        blur_kernel_size: odd Gaussian kernel size of ``Blur``; None disables the blur.
        mask_source: what ``M`` thresholds: ``"uncertainty"`` (``U^p``, the paper's Eq. 13),
            ``"margin"`` (the margin of the coarse logits, ``1 - |2 sigmoid(P_fg) - 1|``, an option
            beyond the paper) or ``"max"`` (the larger of the two at each pixel).
        device, dtype: factory arguments.

    Attributes:
        feature_dim (int): channels of the mask feature ``F``.
        hidden_dim (int): width of ``R``'s hidden convolutions.
        tau (float): threshold of the soft mask.
        temperature (float): temperature of the soft mask.
        blur_kernel_size (int or None): kernel size of ``Blur``; None when the blur is off.
        mask_source (str): what ``M`` thresholds (``"uncertainty"``, ``"margin"`` or ``"max"``).

    Shapes:
        - mask_feature: (B, feature_dim, Hf, Wf), resized bilinearly to (H, W) when it differs
        - coarse_logits: (B, 1, H, W) foreground logits ``P_fg``
        - uncertainty: (B, 1, Hu, Wu) uncertainty logits ``U`` at any resolution
        - output: (B, 1, H, W) refined logits ``P_ref``
    """

    def __init__(
        self,
        feature_dim: int,
        *,
        hidden_dim: int = 64,
        tau: float = 0.5,
        temperature: float = 0.1,
        blur_kernel_size: int | None = 3,
        mask_source: str = "uncertainty",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        if temperature <= 0:
            raise ValueError(f"UncertaintyDrivenRefinement: temperature must be > 0; got {temperature}.")
        if mask_source not in MASK_SOURCES:
            raise ValueError(
                f"UncertaintyDrivenRefinement: mask_source must be one of {MASK_SOURCES}; got {mask_source!r}."
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.tau = float(tau)
        self.temperature = float(temperature)
        self.blur_kernel_size = None if blur_kernel_size is None else int(blur_kernel_size)
        self.mask_source = mask_source
        self.blur_taps = gaussian_taps(self.blur_kernel_size or 1)
        self.head = nn.Sequential(  # R of Eq. 15
            nn.Conv2d(self.feature_dim + 2, self.hidden_dim, 3, padding=1, **factory),
            nn.ReLU(),
            nn.Conv2d(self.hidden_dim, self.hidden_dim, 3, padding=1, **factory),
            nn.ReLU(),
            nn.Conv2d(self.hidden_dim, 1, 1, **factory),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default init for the hidden convolutions, exact zero for the last one."""
        for layer in self.head:
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        last = cast(nn.Conv2d, self.head[-1])
        assert last.bias is not None  # built with a bias
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def soft_mask(
        self, uncertainty: torch.Tensor, size: Sequence[int], coarse_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Eq. 13-14: the detached soft refinement mask ``M`` of shape ``(B, 1, *size)``, in (0, 1).

        ``coarse_logits``, of shape ``(B, 1, *size)``, are needed only when ``mask_source`` reads the
        margin.
        """
        return self._mask_from(resize_logits(uncertainty, size), coarse_logits)

    def _mask_from(self, logits: torch.Tensor, coarse_logits: torch.Tensor | None) -> torch.Tensor:
        """``M`` from the uncertainty logits already at the target size (no gradient, float32 inside)."""
        dtype = logits.dtype
        with torch.no_grad():
            logits = logits.detach()
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            prob = torch.sigmoid(logits)
            if self.mask_source != "uncertainty":
                if coarse_logits is None:
                    raise ValueError(
                        f"UncertaintyDrivenRefinement: mask_source={self.mask_source!r} reads the margin of the "
                        "coarse logits; pass coarse_logits to soft_mask()."
                    )
                margin = 1.0 - (2.0 * torch.sigmoid(coarse_logits.float()) - 1.0).abs()
                prob = margin if self.mask_source == "margin" else torch.maximum(prob, margin)
            if self.blur_kernel_size is not None:
                prob = gaussian_blur(prob, self.blur_taps)
            mask = torch.sigmoid((prob - self.tau) / self.temperature)
        return mask.to(dtype).detach()

    def _check(self, mask_feature, coarse_logits, uncertainty) -> None:
        owner = type(self).__name__
        check_rank(owner, "mask_feature", mask_feature, "(B, C, Hf, Wf)")
        check_rank(owner, "coarse_logits", coarse_logits, "(B, 1, H, W)")
        check_rank(owner, "uncertainty", uncertainty, "(B, 1, Hu, Wu)")
        check_channels(owner, "mask_feature", mask_feature, self.feature_dim, dim=1, layout="(B, C, Hf, Wf)",
                       fix=f"Build the module with feature_dim={int(mask_feature.shape[1])}.")
        check_channels(owner, "coarse_logits", coarse_logits, 1, dim=1, layout="(B, 1, H, W)",
                       fix="Pass the single foreground logit map P_fg.")
        check_channels(owner, "uncertainty", uncertainty, 1, dim=1, layout="(B, 1, Hu, Wu)")
        check_same_batch(owner, [("coarse_logits", coarse_logits), ("mask_feature", mask_feature),
                                 ("uncertainty", uncertainty)])

    def forward(
        self,
        mask_feature: torch.Tensor,
        coarse_logits: torch.Tensor,
        uncertainty: torch.Tensor,
    ) -> torch.Tensor:
        """Return ``P_ref`` (B, 1, H, W) at the resolution of ``coarse_logits``."""
        return self.refine(mask_feature, coarse_logits, uncertainty)[0]

    def refine(
        self,
        mask_feature: torch.Tensor,
        coarse_logits: torch.Tensor,
        uncertainty: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward` but also return ``M``: ``(P_ref, M)``, both (B, 1, H, W)."""
        if checks_enabled(self):
            self._check(mask_feature, coarse_logits, uncertainty)
        size = coarse_logits.shape[-2:]
        feature = resize_logits(mask_feature, size)
        logits_u = resize_logits(uncertainty, size)  # resized once: for U^p and for M
        prob = torch.sigmoid(logits_u)  # U^p
        mask = self._mask_from(logits_u, coarse_logits)  # M, no gradient
        delta = self._head(feature, coarse_logits.to(feature.dtype), prob.to(feature.dtype))
        return coarse_logits + mask.to(delta.dtype) * delta, mask

    def _head(self, feature: torch.Tensor, coarse: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """``R([F ; P_fg ; U^p])`` (Eq. 15) without building the concatenation: the first convolution is
        applied to ``F`` and to ``[P_fg ; U^p]`` with the two slices of its weight and summed, which
        equals the convolution of the concatenation and spares a copy of the wide feature ``F``."""
        first = cast(nn.Conv2d, self.head[0])
        hidden = F.conv2d(feature, first.weight[:, : self.feature_dim], first.bias, padding=1)
        hidden = hidden + F.conv2d(torch.cat([coarse, prob], dim=1), first.weight[:, self.feature_dim :], padding=1)
        return self.head[1:](hidden)

    def extra_repr(self) -> str:
        return (
            f"feature_dim={self.feature_dim}, hidden_dim={self.hidden_dim}, tau={self.tau}, "
            f"temperature={self.temperature}, blur_kernel_size={self.blur_kernel_size}, "
            f"mask_source={self.mask_source!r}"
        )
