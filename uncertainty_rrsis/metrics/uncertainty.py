"""Uncertainty quality: does ``U^p`` predict the model's errors, and beat the free baseline?

:class:`UncertaintyQualityMetrics` scores ``U^p`` next to the free baseline every model has (the
margin of its own logits, :func:`margin_uncertainty`): AUROC and AUPRC as a score for error
pixels and the share of error pixels caught in the top 5/10/20 % most uncertain pixels, from
fixed histograms (memory does not grow with the split, ranks sum with one ``all_reduce``); and,
per sample, how well a score detects a failed sample (IoU < 0.5) and ranks samples for selective
prediction (risk-coverage, AURC). The per-sample rankings are exact: :func:`binary_auroc`,
:func:`average_precision` and :func:`risk_coverage`.

Axis letters: B batch, H/W mask height/width, N samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from .._ops import resize_logits
from ._common import _groups
from .segmentation import per_sample_iou

__all__ = [
    "UncertaintyQualityMetrics",
    "margin_uncertainty",
    "binary_auroc",
    "average_precision",
    "risk_coverage",
    "SAMPLE_SCORES",
]


def margin_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """The free baseline every segmentation model has: ``1 - |2 sigmoid(P) - 1|`` in [0, 1].

    1 where the foreground probability is 0.5 (the model cannot decide), 0 where it is sure
    (PointRend's point-selection uncertainty).

    Shapes:
        logits: any shape -> same shape, float.
    """
    return 1.0 - (2.0 * torch.sigmoid(logits.float()) - 1.0).abs()


def _ranking(err: torch.Tensor, ok: torch.Tensor, top_fractions: Sequence[float]) -> dict[str, float]:
    """AUROC, AUPRC and caught@k from two histograms over score bins (most uncertain bin first)."""
    n_err, n_ok = float(err.sum()), float(ok.sum())
    total = n_err + n_ok
    out: dict[str, float] = {}
    if n_err > 0 and n_ok > 0:
        tp = torch.cat([torch.zeros(1, dtype=torch.float64), err.cumsum(0)])
        fp = torch.cat([torch.zeros(1, dtype=torch.float64), ok.cumsum(0)])
        tpr, fpr = tp / n_err, fp / n_ok
        out["AUROC"] = float(torch.trapezoid(tpr, fpr))
        mask = err > 0
        precision = tp[1:] / (tp[1:] + fp[1:]).clamp_min(1e-300)
        out["AUPRC"] = float(((err / n_err) * precision)[mask].sum())
    else:
        out["AUROC"] = float("nan")
        out["AUPRC"] = float("nan")
    both = err + ok
    cum = both.cumsum(0)
    cum_err = err.cumsum(0)
    bins = err.numel()
    for frac in top_fractions:
        key = f"caught@{frac * 100:g}%"
        if n_err == 0:
            out[key] = float("nan")
            continue
        budget = frac * total
        k = int(torch.searchsorted(cum, torch.tensor([budget], dtype=torch.float64)).item())
        k = min(k, bins - 1)
        before = float(cum[k - 1]) if k > 0 else 0.0
        err_before = float(cum_err[k - 1]) if k > 0 else 0.0
        share = (budget - before) / float(both[k]) if float(both[k]) > 0 else 0.0
        out[key] = (err_before + share * float(err[k])) / n_err
    return out


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact AUROC of ``scores`` for ``labels`` (ties count one half); NaN without both classes.

    Shapes:
        scores: (N,) float;  labels: (N,) bool, True = positive (e.g. a failed sample).
    """
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with mid-ranks for ties
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    first = counts.cumsum(0) - counts  # 0-based position of each distinct value's first sample
    rank_of = (first + (counts + 1) / 2.0).double()[inverse]  # 1-based mid-rank of every sample
    u = float(rank_of[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of ``scores`` for ``labels`` (tied scores enter together); NaN without positives.

    Shapes:
        scores: (N,) float;  labels: (N,) bool.
    """
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    pos = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, labels.double()).flip(0)
    all_ = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(scores)).flip(0)
    tp, seen = pos.cumsum(0), all_.cumsum(0)
    return float(((pos / n_pos) * (tp / seen)).sum())


def risk_coverage(scores: torch.Tensor, risk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The risk-coverage curve of selective prediction and its area (AURC).

    Samples are kept in order of increasing ``scores`` (the most confident first); at coverage
    ``k / N`` the risk is the mean ``risk`` of the ``k`` kept samples. AURC is the mean of the
    risks over k = 1..N (lower is better; sorting by the true risk gives the smallest possible).

    Shapes:
        scores, risk: (N,) float -> coverage (N,), risk curve (N,), AURC float.
    """
    scores, risk = scores.double().flatten(), risk.double().flatten()
    if scores.numel() == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), float("nan")
    order = torch.argsort(scores, stable=True)
    n = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    curve = risk[order].cumsum(0) / n
    return n / scores.numel(), curve, float(curve.mean())


#: Sample-level scores of :class:`UncertaintyQualityMetrics` (higher = more likely wrong).
SAMPLE_SCORES: tuple[str, ...] = ("u_mask", "u_image", "margin")


class UncertaintyQualityMetrics:
    """Does ``U^p`` find the model's errors, and does it beat the free baseline?

    **Pixels.** For each score, two histograms over ``bins`` equal bins of [0, 1] (bin
    ``min(floor(p * bins), bins - 1)``), one for error pixels and one for correct pixels; from
    them, sweeping the threshold from the most to the least uncertain bin:

    * ``AUROC``: trapezoidal area under (false-positive rate, true-positive rate); pixels in one
      bin count as tied (a tie counts one half), exact for scores on the bin grid;
    * ``AUPRC``: average precision, ``sum_k (R_k - R_{k-1}) * P_k`` over bin thresholds;
    * ``caught@5%`` (10 %, 20 %): share of error pixels among the 5 % most uncertain pixels;
      inside the bin that straddles the cut, errors are counted pro rata.

    The scores are ``U^p`` (keys without prefix) and, when fed through
    :meth:`update_from_batch`, two baselines: ``margin/...``, the margin of the final logits
    ``1 - |2 sigmoid(P) - 1|`` at full resolution (:func:`margin_uncertainty`), and
    ``margin_pooled/...``, that margin averaged over the cells of ``U``'s grid and resized back
    (bilinear), which gives it ``U``'s resolution: the control that separates "``U`` is
    coarse" from "``U`` is uninformative". With 1000 bins the numbers agree with exact
    per-pixel computations to about 1e-3.

    **Samples (failure detection).** Each sample's IoU (the field's protocol) and three scores:
    ``u_mask`` (mean ``U^p`` over the predicted mask; over the image when the prediction is
    empty), ``u_image`` (mean ``U^p`` over the image) and ``margin`` (mean margin over the
    predicted mask, same rule), and ``risk`` when a risk head's logits are given. For each score:
    ``failure/<score>/AUROC`` and ``/AUPRC`` of
    detecting a failed sample (IoU < ``fail_below``, 0.5), and ``/AURC``, the area under the
    risk-coverage curve with risk ``1 - IoU`` (:func:`risk_coverage`); ``failure/oracle/AURC``
    (sorted by the true risk) and ``failure/random/AURC`` (the mean risk) bound it.
    ``failure/rate`` and ``failure/count`` describe the split. :meth:`compute_breakdown` gives
    the sample metrics per tag group (``dense=true``, ``query=relation``, ...).

    **Pixels by outcome.** ``outcome/<TP|FP|FN|TN>/u_mean`` and ``/margin_mean``: the mean
    ``U^p`` and the mean margin over the true-positive, false-positive, false-negative and
    true-negative pixels of the final prediction, and ``/share``, each cell's share of the
    pixels. A score that knows where the prediction is wrong is higher on FP than on TP pixels;
    one that only knows where objects are is high on both.

    Also ``error_rate`` and ``pixels``. Sums of histograms (and of the outcome cells) synchronise
    over DDP with one ``all_reduce``, the per-sample rows with one ``all_gather_object``.

    Args:
        bins: histogram resolution.
        top_fractions: the fractions for ``caught@...``.
        fail_below: a sample with IoU below this has failed.
        device: where the float64 histograms live.
    """

    _PIXEL_SCORES = ("", "margin", "margin_pooled")
    _OUTCOMES = ("TP", "FP", "FN", "TN")

    def __init__(
        self,
        *,
        bins: int = 1000,
        top_fractions: Sequence[float] = (0.05, 0.10, 0.20),
        fail_below: float = 0.5,
        device: torch.device | str | None = None,
    ) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2; got {bins}")
        self.bins = int(bins)
        self.top_fractions = tuple(float(f) for f in top_fractions)
        self.fail_below = float(fail_below)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._hist = torch.zeros(len(self._PIXEL_SCORES), 2, self.bins, dtype=torch.float64, device=self.device)
        # per outcome (TP, FP, FN, TN): sum of U^p, sum of the margin, pixel count
        self._cells = torch.zeros(len(self._OUTCOMES), 3, dtype=torch.float64, device=self.device)
        self._baselines = False
        self._samples: list[tuple[float, ...]] = []  # (iou, u_mask, u_image, margin, risk or NaN)
        self._tags: list[Mapping[str, Any]] = []
        self._synced = False

    def _add(self, row: int, scores: torch.Tensor, error: torch.Tensor) -> None:
        idx = (scores.to(torch.float64) * self.bins).floor().long().clamp_(0, self.bins - 1)
        flat = idx + self.bins * (~error).long()  # row 0 = errors, row 1 = correct
        self._hist[row] += torch.bincount(flat, minlength=2 * self.bins).to(torch.float64).view(2, self.bins)

    @torch.no_grad()
    def update(
        self, uncertainty_prob: torch.Tensor, error: torch.Tensor, *, valid: torch.Tensor | None = None
    ) -> None:
        """Add a batch of ``U^p`` (pixel metrics of ``U^p`` only; no baselines, no samples).

        Args:
            uncertainty_prob: (B, H, W) float in [0, 1], ``U^p = sigmoid(U)`` at the
                resolution of ``error``.
            error: (B, H, W) bool, ``pred != target``.
            valid: optional (B, H, W) bool; pixels where it is False are ignored.
        """
        if self._synced:
            raise RuntimeError("metrics were already synced; call reset() before new updates")
        if uncertainty_prob.shape != error.shape:
            raise ValueError(
                f"uncertainty_prob {tuple(uncertainty_prob.shape)} and error {tuple(error.shape)} must have "
                "the "
                "same (B, H, W) shape; resize the uncertainty logits to the mask size first"
            )
        if error.dtype != torch.bool:
            raise ValueError(f"error must be a bool tensor (pred != target); got {error.dtype}")
        if not uncertainty_prob.is_floating_point():
            raise ValueError(f"uncertainty_prob must be float in [0, 1]; got {uncertainty_prob.dtype}")
        p = uncertainty_prob.detach().to(self.device, torch.float64).reshape(-1)
        e = error.to(self.device).reshape(-1)
        if valid is not None:
            keep = valid.to(self.device).reshape(-1).bool()
            p, e = p[keep], e[keep]
        if p.numel() and (bool(torch.isnan(p).any()) or float(p.min()) < 0.0 or float(p.max()) > 1.0):
            raise ValueError("uncertainty_prob must lie in [0, 1] (pass sigmoid(U), not the logit U)")
        self._add(0, p, e)

    @torch.no_grad()
    def update_from_batch(
        self,
        uncertainty_logits: torch.Tensor,
        logits: torch.Tensor,
        batch: Mapping[str, Any],
        *,
        grid: Sequence[int] | None = None,
        risk: torch.Tensor | None = None,
    ) -> None:
        """Add a batch from what a model outputs and the collated batch it was given.

        The error map is ``(logits > 0) != batch["mask"]`` after resizing ``logits`` to the
        mask (bilinear, on logits); ``U^p`` is ``sigmoid`` of ``uncertainty_logits`` resized
        the same way. Scored at the input resolution (``batch["mask"]``), also when the
        segmentation metric scores at the original size. Feeds the two pixel baselines and the
        sample-level failure detection too; ``batch["tags"]``, when present, feeds the
        breakdown.

        Args:
            uncertainty_logits: (B, 1, h, w) float, the uncertainty logits ``U`` on a grid that
                covers exactly the input image (for a model that pads its input, crop the
                padding away first, e.g. with ``CroBIMU.to_image_size``).
            logits: (B, 1, H', W') float, the final foreground logits.
            batch: a collated batch with ``"mask"`` (B, H, W) bool.
            grid: (h, w), the cells of ``U``'s own grid over the image, for the pooled margin;
                defaults to the size of ``uncertainty_logits`` (pass it when those logits were
                resized, e.g. to crop a padded canvas).
            risk: (B,) failure logits of a risk head, scored as the sample score ``risk``.
        """
        if "mask" not in batch:
            raise ValueError(f"batch must hold 'mask' (B, H, W) bool; got keys {sorted(batch)}")
        target = batch["mask"].to(self.device).bool()
        for name, x in (("uncertainty_logits", uncertainty_logits), ("logits", logits)):
            if x.dim() != 4 or x.shape[1] != 1 or x.shape[0] != target.shape[0]:
                raise ValueError(
                    f"{name} must be (B, 1, h, w) with B = {target.shape[0]} (the batch's masks); "
                    f"got {tuple(x.shape)}"
                )
        size = target.shape[-2:]
        full = resize_logits(logits.to(self.device).float(), size)  # (b, 1, H, W)
        pred = full[:, 0] > 0
        prob = torch.sigmoid(resize_logits(uncertainty_logits.to(self.device).float(), size))[:, 0]
        error = pred != target
        self.update(prob, error)
        margin = margin_uncertainty(full)  # (b, 1, H, W)
        cells = grid if grid is not None else uncertainty_logits.shape[-2:]
        grid = cast(tuple[int, int], tuple(int(g) for g in cells))
        pooled = resize_logits(torch.nn.functional.adaptive_avg_pool2d(margin, grid), size).clamp(0.0, 1.0)
        self._add(1, margin[:, 0].reshape(-1), error.reshape(-1))
        self._add(2, pooled[:, 0].reshape(-1), error.reshape(-1))
        self._baselines = True
        outcome = torch.where(pred, torch.where(target, 0, 1), torch.where(target, 2, 3)).reshape(-1)  # TP FP FN TN
        values = torch.stack([prob.reshape(-1).double(), margin[:, 0].reshape(-1).double(),
                              torch.ones_like(prob.reshape(-1), dtype=torch.float64)], dim=1)  # (N, 3)
        self._cells.index_add_(0, outcome, values)
        _, _, iou = per_sample_iou(pred, target)
        flat_pred = pred.reshape(pred.shape[0], -1).to(torch.float64)
        covered = flat_pred.sum(1)
        weights = torch.where(covered[:, None] > 0, flat_pred, torch.ones_like(flat_pred))
        weights = weights / weights.sum(1, keepdim=True)
        u_mask = (prob.reshape(prob.shape[0], -1).double() * weights).sum(1)
        u_image = prob.reshape(prob.shape[0], -1).double().mean(1)
        m_mask = (margin[:, 0].reshape(margin.shape[0], -1).double() * weights).sum(1)
        risk_p = (torch.sigmoid(risk.detach().to(self.device).double()) if risk is not None
                  else torch.full_like(iou, math.nan))
        rows = torch.stack([iou, u_mask, u_image, m_mask, risk_p], dim=1).cpu().tolist()
        self._samples.extend(tuple(r) for r in rows)
        tags = batch.get("tags")
        self._tags.extend(tags if tags is not None else [{}] * len(rows))

    @torch.no_grad()
    def sync(self, group: Any = None) -> UncertaintyQualityMetrics:
        """Sum the histograms over DDP ranks in place (one ``all_reduce``) and gather the samples."""
        if self._synced:
            raise RuntimeError("metrics were already synced; call reset() to start again")
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            packed = torch.cat([self._hist.reshape(-1), self._cells.reshape(-1)])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
            self._hist = packed[: self._hist.numel()].view_as(self._hist).clone()
            self._cells = packed[self._hist.numel():].view_as(self._cells).clone()
            gathered: list[Any] = [None] * dist.get_world_size(group)
            dist.all_gather_object(gathered, (self._samples, self._tags, self._baselines), group=group)
            self._samples = [row for part in gathered for row in part[0]]
            self._tags = [tag for part in gathered for tag in part[1]]
            self._baselines = any(part[2] for part in gathered)
        self._synced = True
        return self

    def histograms(self) -> torch.Tensor:
        """(2, bins) float64 counts of ``U^p``: row 0 error pixels, row 1 correct pixels."""
        return self._hist[0].clone()

    def _sample_metrics(self, rows: Sequence[tuple[float, ...]]) -> dict[str, float]:
        if not rows:
            return {}
        table = torch.tensor(rows, dtype=torch.float64)
        iou = table[:, 0]
        failed = iou < self.fail_below
        risk = 1.0 - iou
        out: dict[str, float] = {"failure/count": float(len(rows)), "failure/rate": float(failed.double().mean())}
        names = SAMPLE_SCORES + (("risk",) if not torch.isnan(table[:, 4]).any() else ())
        for column, name in enumerate(names, start=1):
            score = table[:, column]
            out[f"failure/{name}/AUROC"] = binary_auroc(score, failed)
            out[f"failure/{name}/AUPRC"] = average_precision(score, failed)
            out[f"failure/{name}/AURC"] = risk_coverage(score, risk)[2]
            out[f"failure/{name}/mean"] = float(score.mean())
        out["failure/oracle/AURC"] = risk_coverage(risk, risk)[2]
        out["failure/random/AURC"] = float(risk.mean())
        return out

    def compute(self) -> dict[str, float]:
        """The pixel metrics of ``U^p`` (``AUROC``, ``AUPRC``, ``caught@5%``, ``caught@10%``,
        ``caught@20%``, ``error_rate``, ``pixels``), of the baselines (``margin/...``,
        ``margin_pooled/...``) and the sample metrics (``failure/...``) when fed.

        AUROC/AUPRC are NaN when the split has no error pixel (or failed sample) or no correct one.
        """
        out: dict[str, float] = {}
        for row, name in enumerate(self._PIXEL_SCORES):
            if row > 0 and not self._baselines:
                continue
            ranked = _ranking(self._hist[row, 0].flip(0).cpu(), self._hist[row, 1].flip(0).cpu(), self.top_fractions)
            out.update({(f"{name}/{k}" if name else k): v for k, v in ranked.items()})
        n_err, n_ok = float(self._hist[0, 0].sum()), float(self._hist[0, 1].sum())
        total = n_err + n_ok
        out["error_rate"] = n_err / total if total > 0 else 0.0
        out["pixels"] = int(total)
        cells = self._cells.cpu()
        if self._baselines and float(cells[:, 2].sum()) > 0:
            for name, (u_sum, m_sum, count) in zip(self._OUTCOMES, cells.tolist(), strict=True):
                out[f"outcome/{name}/u_mean"] = u_sum / count if count > 0 else math.nan
                out[f"outcome/{name}/margin_mean"] = m_sum / count if count > 0 else math.nan
                out[f"outcome/{name}/share"] = count / float(cells[:, 2].sum())
        out.update(self._sample_metrics(self._samples))
        return out

    def compute_breakdown(self) -> dict[str, dict[str, float]]:
        """``{"<tag>=<value>": failure-detection metrics of those samples}`` for every tag group seen."""
        groups: dict[str, list[tuple[float, ...]]] = {}
        for row, tags in zip(self._samples, self._tags):
            for group in _groups(tags):
                groups.setdefault(group, []).append(row)
        return {group: self._sample_metrics(rows) for group, rows in sorted(groups.items())}
