"""Risk after decoding: which answers to trust (per sample) and where they are wrong (per pixel).

Options beyond the paper. The paper's ``U`` is computed before the decoder, from the image and the
sentence: it marks every object the sentence could mean, the one the model picks and the others
alike. These two heads read the decoded answer itself, next to the sentence and the candidates
that ``U`` lights up, and are trained online against the model's own outcome:

* :class:`SampleRiskHead` -- per sample, the predicted IoU of the answer and the probability that
  it failed (IoU < 0.5). It compares the object the prediction covers with the sentence, and the
  objects ``U`` marks outside the prediction with the sentence: a crisp mask on the wrong object
  (a distractor that fits part of the sentence) is the failure no margin can see.
* :class:`PixelRiskHead` -- per pixel, error logits of the final prediction, from the mask
  feature, the final and coarse logits, their margin and ``U^p``.

Their inputs are detached by default (``detach=True``): they learn to read the model, they do not
change it.

Axis legend
    b: batch   c: feature width (``feature_dim``)   d: text width (``text_dim``)   l: text tokens
    h, w: the grid of the mask feature ``F``   k: scalar statistics
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from .._attention import keep_from_padding
from .._contracts import check_channels, check_padding_mask, check_rank, check_same_batch, checks_enabled
from .._ops import resize_logits

__all__ = ["SampleRiskHead", "PixelRiskHead", "RISK_STATISTICS"]

#: The scalar statistics :class:`SampleRiskHead` reads besides the pooled features, in order.
RISK_STATISTICS: tuple[str, ...] = (
    "predicted area fraction",
    "margin mean over the predicted mask",
    "U^p mean over the predicted mask",
    "U^p mean outside the predicted mask",
    "U^p max outside the predicted mask",
    "disagreement of the coarse and the final prediction (1 - IoU)",
    "cosine of the predicted object and the sentence",
    "cosine of the other candidates and the sentence",
)

_EPS = 1e-6


def _soft_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of two (b, h, w) masks in [0, 1] (1 when both are empty)."""
    inter = reduce(a * b, "b h w -> b", "sum")
    union = reduce(a + b - a * b, "b h w -> b", "sum")
    return torch.where(union > 0, inter / union.clamp_min(_EPS), torch.ones_like(union))


class SampleRiskHead(nn.Module):
    """Predicted IoU and failure logit of each (image, sentence) answer, trained online.

    With ``m = sigmoid(P)`` the soft prediction and ``c = U^p (1 - m)`` the candidates ``U`` marks
    outside it, both on the grid of ``F``::

        v_in  = LN(W_v  sum(F m) / sum(m)),   v_out = LN(W_v  sum(F c) / sum(c))
        s     = LN(W_t  mean of the words)
        z     = [v_in * s ; v_out * s ; v_in - v_out ; statistics]
        (failure logit, IoU logit) = MLP(z)

    ``sigmoid`` of the IoU logit is the predicted IoU; of the failure logit, the probability that
    IoU < 0.5. The statistics are :data:`RISK_STATISTICS`. The last layer starts at zero, so every
    answer starts at risk 0.5 and predicted IoU 0.5.

    Args:
        feature_dim: width ``C`` of the mask feature ``F``.
        text_dim: width ``D`` of the word features.
        hidden_dim: width of the projections and of the MLP.
        detach: read the inputs without passing a gradient back to the model.
        device, dtype: factory arguments.

    Attributes:
        feature_dim, text_dim, hidden_dim (int); detach (bool).

    Shapes:
        - mask_feature: (B, C, H, W), the decoder's mask feature ``F``
        - logits: (B, 1, H', W') the final logits ``P``; coarse_logits: (B, 1, H', W') ``P_fg``
        - uncertainty: (B, 1, Hu, Wu) uncertainty logits ``U``
        - text: (B, L, D); text_padding_mask: (B, L) bool, True = padding, or None
        - output: ``(failure_logits (B,), iou_logits (B,))``
    """

    def __init__(
        self,
        feature_dim: int,
        text_dim: int,
        *,
        hidden_dim: int = 64,
        detach: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.feature_dim, self.text_dim, self.hidden_dim = int(feature_dim), int(text_dim), int(hidden_dim)
        self.detach = bool(detach)
        self.visual_proj = nn.Linear(self.feature_dim, self.hidden_dim, **factory)
        self.text_proj = nn.Linear(self.text_dim, self.hidden_dim, **factory)
        self.visual_norm = nn.LayerNorm(self.hidden_dim, **factory)
        self.text_norm = nn.LayerNorm(self.hidden_dim, **factory)
        self.mlp = nn.Sequential(
            nn.Linear(3 * self.hidden_dim + len(RISK_STATISTICS), self.hidden_dim, **factory),
            nn.GELU(),
            nn.Linear(self.hidden_dim, 2, **factory),
        )
        last = cast(nn.Linear, self.mlp[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _check(self, mask_feature, logits, coarse_logits, uncertainty, text, text_padding_mask) -> None:
        owner = type(self).__name__
        check_rank(owner, "mask_feature", mask_feature, "(B, C, H, W)")
        check_channels(owner, "mask_feature", mask_feature, self.feature_dim, dim=1, layout="(B, C, H, W)")
        for name, x in (("logits", logits), ("coarse_logits", coarse_logits), ("uncertainty", uncertainty)):
            check_rank(owner, name, x, "(B, 1, H, W)")
            check_channels(owner, name, x, 1, dim=1, layout="(B, 1, H, W)")
        check_rank(owner, "text", text, "(B, L, D)")
        check_channels(owner, "text", text, self.text_dim, dim=2, layout="(B, L, D)")
        check_same_batch(owner, [("mask_feature", mask_feature), ("logits", logits), ("text", text)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def forward(
        self,
        mask_feature: torch.Tensor,
        logits: torch.Tensor,
        coarse_logits: torch.Tensor,
        uncertainty: torch.Tensor,
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(failure_logits, iou_logits)``, each (B,); see the class docstring."""
        if checks_enabled(self):
            self._check(mask_feature, logits, coarse_logits, uncertainty, text, text_padding_mask)
        if self.detach:
            mask_feature, text = mask_feature.detach(), text.detach()
        dtype = self.visual_proj.weight.dtype
        size = mask_feature.shape[-2:]
        with torch.no_grad():  # the statistics never carry a gradient
            p = resize_logits(logits.detach().float(), size)[:, 0]  # (b, h, w)
            m = torch.sigmoid(p)
            u = torch.sigmoid(resize_logits(uncertainty.detach().float(), size))[:, 0]
            coarse = torch.sigmoid(resize_logits(coarse_logits.detach().float(), size))[:, 0]
            c = u * (1.0 - m)
            area = reduce(m, "b h w -> b", "mean")
            inside = reduce(m, "b h w -> b", "sum").clamp_min(_EPS)
            outside = reduce(1.0 - m, "b h w -> b", "sum").clamp_min(_EPS)
            margin = 1.0 - (2.0 * m - 1.0).abs()
            stats = [
                area,
                reduce(margin * m, "b h w -> b", "sum") / inside,
                reduce(u * m, "b h w -> b", "sum") / inside,
                reduce(c, "b h w -> b", "sum") / outside,
                reduce(c, "b h w -> b", "max"),
                1.0 - _soft_iou((m > 0.5).float(), (coarse > 0.5).float()),
            ]
            weights = torch.stack([m, c], dim=1)  # (b, 2, h, w)
            weights = weights / reduce(weights, "b k h w -> b k 1 1", "sum").clamp_min(_EPS)
        pooled = torch.einsum("bchw,bkhw->bkc", mask_feature.to(dtype), weights.to(dtype))  # (b, 2, c)
        v = self.visual_norm(self.visual_proj(pooled))  # (b, 2, hidden)
        if text_padding_mask is None:
            keep = torch.ones(text.shape[:2], dtype=dtype, device=text.device)
        else:
            keep = keep_from_padding(text_padding_mask).to(dtype)
        words = reduce(text.to(dtype) * keep[..., None], "b l d -> b d", "sum") / keep.sum(1, keepdim=True).clamp_min(1)
        s = self.text_norm(self.text_proj(words))  # (b, hidden)
        v_in, v_out = v[:, 0], v[:, 1]
        cosines = [F.cosine_similarity(v_in, s, dim=-1), F.cosine_similarity(v_out, s, dim=-1)]
        scalars = torch.stack([*(x.to(dtype) for x in stats), *cosines], dim=1)  # (b, k)
        z = torch.cat([v_in * s, v_out * s, v_in - v_out, scalars], dim=1)
        out = self.mlp(z)
        return out[:, 0], out[:, 1]

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, text_dim={self.text_dim}, hidden_dim={self.hidden_dim}, "
                f"detach={self.detach}")


class PixelRiskHead(nn.Module):
    """Error logits of the final prediction, per pixel of the mask feature's grid (trained online).

    ``E = R([F ; P ; P_fg ; margin(P) ; U^p])`` with ``R`` = conv3x3-ReLU-conv3x3-ReLU-conv1x1, all
    maps resized (bilinear, on logits) to ``F``'s grid; ``sigmoid(E)`` estimates the probability
    that ``P > 0`` is wrong at a pixel. The margin is ``1 - |2 sigmoid(P) - 1|``. The last
    convolution starts at zero.

    Args:
        feature_dim: width ``C`` of ``F``.
        hidden_dim: width of the head.
        detach: read the inputs without passing a gradient back to the model.
        device, dtype: factory arguments.

    Shapes:
        - mask_feature: (B, C, H, W); logits, coarse_logits: (B, 1, H', W'); uncertainty: (B, 1, Hu, Wu)
        - output: (B, 1, H, W) error logits on ``F``'s grid
    """

    def __init__(
        self,
        feature_dim: int,
        *,
        hidden_dim: int = 32,
        detach: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.feature_dim, self.hidden_dim, self.detach = int(feature_dim), int(hidden_dim), bool(detach)
        self.head = nn.Sequential(
            nn.Conv2d(self.feature_dim + 4, self.hidden_dim, 3, padding=1, **factory),
            nn.ReLU(),
            nn.Conv2d(self.hidden_dim, self.hidden_dim, 3, padding=1, **factory),
            nn.ReLU(),
            nn.Conv2d(self.hidden_dim, 1, 1, **factory),
        )
        last = cast(nn.Conv2d, self.head[-1])
        nn.init.zeros_(last.weight)
        assert last.bias is not None  # built with a bias
        nn.init.zeros_(last.bias)

    def forward(self, mask_feature: torch.Tensor, logits: torch.Tensor, coarse_logits: torch.Tensor,
                uncertainty: torch.Tensor) -> torch.Tensor:
        """Error logits (B, 1, H, W) on the grid of ``mask_feature``."""
        if checks_enabled(self):
            owner = type(self).__name__
            check_rank(owner, "mask_feature", mask_feature, "(B, C, H, W)")
            check_channels(owner, "mask_feature", mask_feature, self.feature_dim, dim=1, layout="(B, C, H, W)")
            check_same_batch(owner, [("mask_feature", mask_feature), ("logits", logits)])
        if self.detach:
            mask_feature = mask_feature.detach()
        size, dtype = mask_feature.shape[-2:], cast(nn.Conv2d, self.head[0]).weight.dtype
        with torch.no_grad():
            p = resize_logits(logits.detach().float(), size)
            maps = torch.cat([
                p.tanh(),  # bounded: a logit of 40 and one of 4 are both "sure"
                resize_logits(coarse_logits.detach().float(), size).tanh(),
                1.0 - (2.0 * torch.sigmoid(p) - 1.0).abs(),
                torch.sigmoid(resize_logits(uncertainty.detach().float(), size)),
            ], dim=1)
        return self.head(torch.cat([mask_feature.to(dtype), maps.to(dtype)], dim=1))

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, hidden_dim={self.hidden_dim}, detach={self.detach}"
