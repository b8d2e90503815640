"""Uncertainty quality: does ``U^p`` predict the model's errors, and beat the free baseline?

:class:`UncertaintyQualityMetrics` scores ``U^p`` next to the free baseline every model has (the
margin of its own logits, :func:`margin_uncertainty`): AUROC and AUPRC as a score for error
pixels and the share of error pixels caught in the top 5/10/20 % most uncertain pixels, from
fixed histograms (memory does not grow with the split, ranks sum with one ``all_reduce``); and,
per sample, how well a score detects a failed sample (IoU < 0.5) and ranks samples for selective
prediction (risk-coverage, AURC). The per-sample rankings are exact (:mod:`.ranking`).

Axis letters: B batch, H/W mask height/width, N samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from .._ops import resize_logits
from ._common import _groups
from .ranking import _ranking, average_precision, binary_auroc, risk_coverage
from .segmentation import per_sample_iou

__all__ = [
    "UncertaintyQualityMetrics",
    "margin_uncertainty",
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


#: Sample-level scores of :class:`UncertaintyQualityMetrics` (higher = more likely wrong), in report
#: order; those a batch does not feed (``disagreement`` without coarse logits, ``risk`` and ``quality``
#: without a risk head, scores passed as ``sample_scores``) are left out.
SAMPLE_SCORES: tuple[str, ...] = (
    "u_mask", "u_image", "u_outside", "margin", "disagreement", "risk", "quality",
)


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

    The scores are ``U^p`` (keys without prefix), a pixel risk head's error probabilities
    (``error_map/...``) when given, and, when fed through :meth:`update_from_batch`, two
    baselines: ``margin/...``, the margin of the final logits
    ``1 - |2 sigmoid(P) - 1|`` at full resolution (:func:`margin_uncertainty`), and
    ``margin_pooled/...``, that margin averaged over the cells of ``U``'s grid and resized back
    (bilinear), which gives it ``U``'s resolution: the control that separates "``U`` is
    coarse" from "``U`` is uninformative". With 1000 bins the numbers agree with exact
    per-pixel computations to about 1e-3.

    **Samples (failure detection).** Each sample's IoU (the field's protocol) and its scores
    (:data:`SAMPLE_SCORES`, higher = more likely wrong): ``u_mask`` (mean ``U^p`` over the
    predicted mask; over the image when the prediction is empty), ``u_image`` (mean ``U^p`` over
    the image), ``u_outside`` (mean ``U^p`` outside the predicted mask: candidates left out),
    ``margin`` (mean margin over the predicted mask, same rule), ``disagreement`` (``1 - IoU`` of
    the coarse and the final prediction, when coarse logits are given), ``risk`` (the risk head's
    failure probability) and ``quality`` (``1 -`` its predicted IoU), and any score passed as
    ``sample_scores`` (e.g. a test-time augmentation). For each score: ``failure/<score>/AUROC``
    and ``/AUPRC`` of detecting a failed sample (IoU < ``fail_below``, 0.5), and ``/AURC``, the
    area under the risk-coverage curve with risk ``1 - IoU`` (:func:`risk_coverage`);
    ``failure/oracle/AURC`` (sorted by the true risk) and ``failure/random/AURC`` (the mean risk)
    bound it. ``failure/rate`` and ``failure/count`` describe the split.

    **Calibration of a predicted IoU** (a risk head's ``quality``): ``quality/MAE``, the mean
    absolute error of the predicted IoU; ``quality/MAE_constant``, that of the best constant (the
    split's mean IoU, an optimistic baseline since it is fitted on the split it is scored on);
    ``quality/bias`` (mean predicted minus mean IoU); :meth:`reliability` gives the table.
    :meth:`compute_breakdown` gives the sample metrics per tag group (``dense=true``, ...).

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

    _PIXEL_SCORES = ("", "margin", "margin_pooled", "error_map")
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
        self._error_map = False
        self._samples: list[dict[str, float]] = []  # {"iou": ..., score: ..., "predicted_iou": ...}
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
        coarse_logits: torch.Tensor | None = None,
        risk: torch.Tensor | None = None,
        quality: torch.Tensor | None = None,
        error_map: torch.Tensor | None = None,
        sample_scores: Mapping[str, torch.Tensor] | None = None,
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
                covers exactly the input image.
            logits: (B, 1, H', W') float, the final foreground logits.
            batch: a collated batch with ``"mask"`` (B, H, W) bool.
            grid: (h, w), the cells of ``U``'s own grid over the image, for the pooled margin;
                defaults to the size of ``uncertainty_logits``.
            coarse_logits: (B, 1, H', W') the coarse logits, for the ``disagreement`` score.
            risk: (B,) failure logits of a risk head (score ``risk``).
            quality: (B,) IoU logits of a risk head (score ``quality`` and the calibration).
            error_map: (B, 1, h', w') error logits of a pixel risk head (pixel score ``error_map``).
            sample_scores: more (B,) sample scores by name, higher = more likely wrong.
        """
        if "mask" not in batch:
            raise ValueError(f"batch must hold 'mask' (B, H, W) bool; got keys {sorted(batch)}")
        target = batch["mask"].to(self.device).bool()
        for name, x in (("uncertainty_logits", uncertainty_logits), ("logits", logits),
                        ("coarse_logits", coarse_logits), ("error_map", error_map)):
            if x is not None and (x.dim() != 4 or x.shape[1] != 1 or x.shape[0] != target.shape[0]):
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
        if error_map is not None:
            risk_map = torch.sigmoid(resize_logits(error_map.to(self.device).float(), size))
            self._add(3, risk_map[:, 0].reshape(-1), error.reshape(-1))
            self._error_map = True
        outcome = torch.where(pred, torch.where(target, 0, 1), torch.where(target, 2, 3)).reshape(-1)  # TP FP FN TN
        values = torch.stack([prob.reshape(-1).double(), margin[:, 0].reshape(-1).double(),
                              torch.ones_like(prob.reshape(-1), dtype=torch.float64)], dim=1)  # (N, 3)
        self._cells.index_add_(0, outcome, values)
        self._add_samples(pred, target, prob, margin[:, 0], batch, coarse_logits=coarse_logits, risk=risk,
                          quality=quality, sample_scores=sample_scores)

    def _add_samples(self, pred, target, prob, margin, batch, *, coarse_logits, risk, quality, sample_scores) -> None:
        """One row per sample: its IoU and every sample score this batch feeds."""
        _, _, iou = per_sample_iou(pred, target)
        flat = lambda x: x.reshape(x.shape[0], -1).double()  # noqa: E731 - (b, h, w) -> (b, h*w)
        inside = flat(pred)
        covered = inside.sum(1, keepdim=True)
        weights = torch.where(covered > 0, inside, torch.ones_like(inside))
        weights = weights / weights.sum(1, keepdim=True)
        outside = 1.0 - inside
        columns: dict[str, torch.Tensor] = {
            "iou": iou,
            "u_mask": (flat(prob) * weights).sum(1),
            "u_image": flat(prob).mean(1),
            "u_outside": (flat(prob) * outside).sum(1) / outside.sum(1).clamp_min(1.0),
            "margin": (flat(margin) * weights).sum(1),
        }
        if coarse_logits is not None:
            coarse = resize_logits(coarse_logits.to(self.device).float(), target.shape[-2:])[:, 0] > 0
            _, _, agreement = per_sample_iou(coarse, pred)
            both_empty = ~(flat(coarse).sum(1).bool() | covered[:, 0].bool())
            columns["disagreement"] = torch.where(both_empty, torch.zeros_like(agreement), 1.0 - agreement)
        if risk is not None:
            columns["risk"] = torch.sigmoid(risk.detach().to(self.device).double())
        if quality is not None:
            predicted = torch.sigmoid(quality.detach().to(self.device).double())
            columns["quality"], columns["predicted_iou"] = 1.0 - predicted, predicted
        for name, score in (sample_scores or {}).items():
            columns[name] = score.detach().to(self.device).double().reshape(-1)
        names = list(columns)
        table = torch.stack([columns[n].to(self.device).double() for n in names], dim=1).cpu().tolist()
        self._samples.extend(dict(zip(names, row)) for row in table)
        tags = batch.get("tags")
        self._tags.extend(tags if tags is not None else [{}] * len(table))

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
            dist.all_gather_object(gathered, (self._samples, self._tags, self._baselines, self._error_map),
                                   group=group)
            self._samples = [row for part in gathered for row in part[0]]
            self._tags = [tag for part in gathered for tag in part[1]]
            self._baselines = any(part[2] for part in gathered)
            self._error_map = any(part[3] for part in gathered)
        self._synced = True
        return self

    def histograms(self) -> torch.Tensor:
        """(2, bins) float64 counts of ``U^p``: row 0 error pixels, row 1 correct pixels."""
        return self._hist[0].clone()

    def _sample_metrics(self, rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
        if not rows:
            return {}
        iou = torch.tensor([r["iou"] for r in rows], dtype=torch.float64)
        failed = iou < self.fail_below
        risk = 1.0 - iou
        out: dict[str, float] = {"failure/count": float(len(rows)), "failure/rate": float(failed.double().mean())}
        for name in self.sample_score_names(rows):
            score = torch.tensor([r[name] for r in rows], dtype=torch.float64)
            out[f"failure/{name}/AUROC"] = binary_auroc(score, failed)
            out[f"failure/{name}/AUPRC"] = average_precision(score, failed)
            out[f"failure/{name}/AURC"] = risk_coverage(score, risk)[2]
            out[f"failure/{name}/mean"] = float(score.mean())
        out["failure/oracle/AURC"] = risk_coverage(risk, risk)[2]
        out["failure/random/AURC"] = float(risk.mean())
        if all("predicted_iou" in r for r in rows):
            predicted = torch.tensor([r["predicted_iou"] for r in rows], dtype=torch.float64)
            out["quality/MAE"] = float((predicted - iou).abs().mean())
            out["quality/MAE_constant"] = float((iou - iou.mean()).abs().mean())
            out["quality/bias"] = float(predicted.mean() - iou.mean())
        return out

    @staticmethod
    def sample_score_names(rows: Sequence[Mapping[str, float]]) -> list[str]:
        """The sample scores every row holds: :data:`SAMPLE_SCORES` first, then the others by name."""
        if not rows:
            return []
        common = set(rows[0]).intersection(*rows[1:]) - {"iou", "predicted_iou"}
        return [n for n in SAMPLE_SCORES if n in common] + sorted(common - set(SAMPLE_SCORES))

    def reliability(self, bins: int = 10) -> list[dict[str, float]]:
        """The reliability table of the predicted IoU: per bin of predicted IoU (equal widths of
        [0, 1]), its range, the number of samples, the mean predicted and the mean actual IoU.
        Empty when no predicted IoU was fed."""
        rows = [r for r in self._samples if "predicted_iou" in r]
        if not rows:
            return []
        table = []
        for k in range(bins):
            lo, hi = k / bins, (k + 1) / bins
            inside = [r for r in rows if lo <= r["predicted_iou"] < hi or (k == bins - 1 and r["predicted_iou"] == 1)]
            if inside:
                table.append({"from": lo, "to": hi, "count": float(len(inside)),
                              "predicted": sum(r["predicted_iou"] for r in inside) / len(inside),
                              "actual": sum(r["iou"] for r in inside) / len(inside)})
        return table

    def compute(self) -> dict[str, float]:
        """The pixel metrics of ``U^p`` (``AUROC``, ``AUPRC``, ``caught@5%``, ``caught@10%``,
        ``caught@20%``, ``error_rate``, ``pixels``), of the baselines (``margin/...``,
        ``margin_pooled/...``) and the sample metrics (``failure/...``) when fed.

        AUROC/AUPRC are NaN when the split has no error pixel (or failed sample) or no correct one.
        """
        out: dict[str, float] = {}
        for row, name in enumerate(self._PIXEL_SCORES):
            if (name in ("margin", "margin_pooled") and not self._baselines) or (name == "error_map" and not
                                                                                   self._error_map):
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
        groups: dict[str, list[dict[str, float]]] = {}
        for row, tags in zip(self._samples, self._tags):
            for group in _groups(tags):
                groups.setdefault(group, []).append(row)
        return {group: self._sample_metrics(rows) for group, rows in sorted(groups.items())}
