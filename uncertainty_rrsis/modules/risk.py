"""A per-sample failure score from the uncertainty map and the prediction (an option beyond the paper).

The paper's ``U`` is a map; a user who wants to know whether a whole answer is wrong ("did the
model segment the wrong object?") needs one number per sample. :class:`SampleRiskHead` turns a
few statistics of ``U^p`` and of the model's own prediction into a failure logit, trained online
against the model's failures (IoU < 0.5), the way ``L_unc`` trains ``U`` against its error pixels.
Its inputs are detached: it learns to read the model, it does not change it.

Axis legend
    b: batch   k: statistics   h, w: the grid of the logits
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from einops import rearrange
from torch import nn

from .._contracts import check_channels, check_rank, check_same_batch, checks_enabled
from .._ops import resize_logits

__all__ = ["SampleRiskHead", "RISK_STATISTICS"]

#: The statistics the head reads, in order.
RISK_STATISTICS: tuple[str, ...] = (
    "U^p mean over the image",
    "U^p max over the image",
    "U^p mean over the predicted mask",
    "U^p mean over its 10 % highest pixels",
    "margin mean over the predicted mask",
    "margin mean over the image",
    "predicted area fraction",
)


class SampleRiskHead(nn.Module):
    """Failure logit per sample from detached statistics of ``U^p`` and of the prediction.

    The statistics (:data:`RISK_STATISTICS`) are computed on the grid of the logits, with ``U``
    resized to it (bilinear, on logits); the margin is ``1 - |2 sigmoid(P) - 1|``. A mask-wise mean
    over an empty prediction falls back to the image. A small MLP maps them to one logit; its last
    layer starts at zero, so every sample starts at risk 0.5.

    Args:
        hidden_dim: width of the MLP's hidden layer.
        device, dtype: factory arguments.

    Shapes:
        - uncertainty: (B, 1, Hu, Wu) uncertainty logits ``U``
        - logits: (B, 1, H, W) the final foreground logits
        - output: (B,) failure logits (``sigmoid`` = the predicted probability that IoU < 0.5)
    """

    def __init__(
        self,
        *,
        hidden_dim: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.hidden_dim = int(hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(len(RISK_STATISTICS), self.hidden_dim, **factory),
            nn.GELU(),
            nn.Linear(self.hidden_dim, 1, **factory),
        )
        last = cast(nn.Linear, self.mlp[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @staticmethod
    @torch.no_grad()
    def statistics(uncertainty: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The detached statistics, (B, len(RISK_STATISTICS)) float32."""
        size = logits.shape[-2:]
        prob = rearrange(torch.sigmoid(resize_logits(uncertainty.float(), size)), "b 1 h w -> b (h w)")
        p = rearrange(logits.float(), "b 1 h w -> b (h w)")
        margin = 1.0 - (2.0 * torch.sigmoid(p) - 1.0).abs()
        pred = (p > 0).float()
        area = pred.mean(dim=1)
        weights = torch.where(area[:, None] > 0, pred, torch.ones_like(pred))
        weights = weights / weights.sum(dim=1, keepdim=True)
        top = max(1, math.ceil(0.1 * prob.shape[1]))
        stats = [
            prob.mean(dim=1),
            prob.amax(dim=1),
            (prob * weights).sum(dim=1),
            prob.topk(top, dim=1).values.mean(dim=1),
            (margin * weights).sum(dim=1),
            margin.mean(dim=1),
            area,
        ]
        return torch.stack(stats, dim=1)

    def forward(self, uncertainty: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Failure logits (B,) of the samples whose uncertainty and final logits are given."""
        if checks_enabled(self):
            owner = type(self).__name__
            check_rank(owner, "uncertainty", uncertainty, "(B, 1, Hu, Wu)")
            check_rank(owner, "logits", logits, "(B, 1, H, W)")
            check_channels(owner, "uncertainty", uncertainty, 1, dim=1, layout="(B, 1, Hu, Wu)")
            check_channels(owner, "logits", logits, 1, dim=1, layout="(B, 1, H, W)")
            check_same_batch(owner, [("uncertainty", uncertainty), ("logits", logits)])
        stats = self.statistics(uncertainty, logits).to(cast(nn.Linear, self.mlp[0]).weight.dtype)
        return self.mlp(stats)[:, 0]

    def extra_repr(self) -> str:
        return f"statistics={len(RISK_STATISTICS)}, hidden_dim={self.hidden_dim}"
