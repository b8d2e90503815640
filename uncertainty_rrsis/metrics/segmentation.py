"""The field's referring-segmentation metrics: oIoU, mIoU, Pr@t and boundary IoU.

Protocol (the LAVT / RMSIN / CroBIM convention), per sample:
``I = |pred & gt|``, ``U = |pred | gt|``, ``IoU = I / U`` and **IoU = 0 when U = 0**.
Over a split: ``oIoU = sum I / sum U``, ``mIoU`` = mean per-sample IoU, ``Pr@t`` = share of
samples with ``IoU >= t`` for t in {0.5, 0.6, 0.7, 0.8, 0.9}. Predictions are binarised
at probability 0.5 (``logit > 0``). Every sentence counts once.

Accumulators are float64 tensors ``[sum_I, sum_U, sum_IoU, count, hits@t...]`` on a
configurable device, so :meth:`ReferringSegmentationMetrics.sync` is one ``all_reduce``
(shard the split across ranks *without* padding so each sample is counted once).

Axis letters: B batch, H/W mask height/width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._ops import resize_logits
from ._common import _groups

__all__ = [
    "THRESHOLDS",
    "ReferringSegmentationMetrics",
    "per_sample_iou",
    "boundary_iou",
    "mask_boundary",
    "binarize_logits",
]

#: Precision thresholds of the field.
THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)

_TOTAL = "__all__"


def per_sample_iou(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union and IoU per sample (IoU = 0 where the union is empty).

    Shapes:
        pred, target: (B, H, W) bool -> I, U, IoU: (B,) float64.
    """
    p = pred.reshape(pred.shape[0], -1)
    t = target.reshape(target.shape[0], -1)
    inter = (p & t).sum(1, dtype=torch.float64)
    union = (p | t).sum(1, dtype=torch.float64)
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
    return inter, union, iou


def mask_boundary(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels of ``mask`` within ``width`` pixels of its contour (the mask minus its erosion).

    Erosion by a square of side ``2 * width + 1`` (Chebyshev distance); pixels outside the image
    count as background, so a mask touching the border has a boundary there too.

    Shapes:
        mask: (B, H, W) bool -> (B, H, W) bool.
    """
    x = mask[:, None].float()
    background = 1.0 - x
    grown = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(background, (width,) * 4, value=1.0), 2 * width + 1, stride=1
    )
    return mask & (grown[:, 0] > 0)


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, *, dilation_ratio: float = 0.02) -> torch.Tensor:
    """Boundary IoU per sample (Cheng et al., 2021): IoU of the two masks' boundary bands.

    The band width is ``max(1, round(dilation_ratio * image diagonal))`` pixels; like the
    field's IoU, a sample whose two bands are both empty scores 0.

    Shapes:
        pred, target: (B, H, W) bool -> (B,) float64.
    """
    height, width = pred.shape[-2:]
    band = max(1, round(dilation_ratio * (height**2 + width**2) ** 0.5))
    return per_sample_iou(mask_boundary(pred, band), mask_boundary(target, band))[2]


def binarize_logits(logits: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Foreground logits -> bool masks, optionally resized first (bilinear, on logits).

    Shapes:
        logits: (B, 1, h, w) or (B, h, w) -> (B, H, W) bool with (H, W) = ``size`` or (h, w).
    """
    x = logits if logits.dim() == 4 else logits.unsqueeze(1)
    if size is not None:
        x = resize_logits(x.float(), size)
    return x[:, 0] > 0


def _as_batch(masks: torch.Tensor | Sequence[torch.Tensor], name: str) -> list[torch.Tensor] | torch.Tensor:
    if isinstance(masks, torch.Tensor):
        if masks.dim() != 3:
            raise ValueError(f"{name} must be (B, H, W); got shape {tuple(masks.shape)}")
        if masks.dtype != torch.bool:
            raise ValueError(f"{name} must be bool (binarise logits with `> 0` first); got {masks.dtype}")
        return masks
    out = list(masks)
    for m in out:
        if m.dim() != 2 or m.dtype != torch.bool:
            raise ValueError(f"each of {name} must be a (H, W) bool tensor; got {tuple(m.shape)} {m.dtype}")
    return out


class ReferringSegmentationMetrics:
    """oIoU, mIoU and Pr@t of a split, with optional per-tag breakdowns and DDP sync.

    Args:
        thresholds: precision thresholds (default 0.5 ... 0.9).
        device: where the float64 accumulators live (e.g. the rank's GPU for NCCL).
        breakdown: keep a breakdown per ``key=value`` of every scalar tag (str, bool,
            int) passed to :meth:`update`.
        at_original_size: :meth:`update_from_batch` evaluates against the original-size
            masks (``batch["orig_mask"]``, dataset built with ``return_orig_mask=True``),
            resizing the logits bilinearly to each original size; otherwise against
            ``batch["mask"]`` at the input resolution (the field's default).
        boundary: also report ``bIoU``, the mean boundary IoU (:func:`boundary_iou`), which
            weighs the contour of every target alike whatever its size.

    Example::

        metrics = ReferringSegmentationMetrics(device=device)
        for batch in loader:
            metrics.update(logits[:, 0] > 0, batch["mask"], tags=batch["tags"])
        metrics.sync()            # under DDP: one all_reduce
        print(metrics.compute())  # {"oIoU": ..., "mIoU": ..., "Pr@0.5": ..., "count": ...}
    """

    def __init__(
        self,
        *,
        thresholds: Sequence[float] = THRESHOLDS,
        device: torch.device | str | None = None,
        breakdown: bool = True,
        at_original_size: bool = False,
        boundary: bool = False,
    ) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.boundary = bool(boundary)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.breakdown = bool(breakdown)
        self.at_original_size = bool(at_original_size)
        self._thr = torch.tensor(self.thresholds, dtype=torch.float64, device=self.device)
        self.reset()

    @property
    def width(self) -> int:
        """Length of one accumulator row: 4 + number of thresholds (+ 1 with ``boundary``)."""
        return 4 + len(self.thresholds) + int(self.boundary)

    def reset(self) -> None:
        """Forget everything accumulated (also after :meth:`sync`)."""
        self._rows: dict[str, torch.Tensor] = {_TOTAL: self._zeros()}
        self._synced = False

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(self.width, dtype=torch.float64, device=self.device)

    def _stats(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, H, W) bool pair -> (B, width) float64 per-sample rows."""
        inter, union, iou = per_sample_iou(pred.to(self.device), target.to(self.device))
        hits = (iou[:, None] >= self._thr[None, :]).to(torch.float64)
        ones = torch.ones_like(iou)
        columns = [inter[:, None], union[:, None], iou[:, None], ones[:, None], hits]
        if self.boundary:
            columns.append(boundary_iou(pred.to(self.device), target.to(self.device))[:, None])
        return torch.cat(columns, dim=1)

    @torch.no_grad()
    def update(
        self,
        pred_mask: torch.Tensor | Sequence[torch.Tensor],
        target_mask: torch.Tensor | Sequence[torch.Tensor],
        *,
        tags: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add a batch.

        Args:
            pred_mask: (B, H, W) bool, or a list of B (H_i, W_i) bool tensors (original
                sizes that differ per sample).
            target_mask: same shapes as ``pred_mask``.
            tags: optional list of B dicts; scalar values feed the breakdown.
        """
        if self._synced:
            raise RuntimeError("metrics were already synced; call reset() before new updates")
        pred = _as_batch(pred_mask, "pred_mask")
        target = _as_batch(target_mask, "target_mask")
        if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor):
            if pred.shape != target.shape:
                raise ValueError(
                    f"pred_mask {tuple(pred.shape)} and target_mask {tuple(target.shape)} differ in shape"
                )
            rows = self._stats(pred, target)
        else:
            pred_l, target_l = list(pred), list(target)
            if len(pred_l) != len(target_l):
                raise ValueError(f"{len(pred_l)} predictions but {len(target_l)} targets")
            for i, (p, t) in enumerate(zip(pred_l, target_l, strict=True)):
                if p.shape != t.shape:
                    raise ValueError(
                        f"sample {i}: prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape"
                    )
            rows = (
                torch.cat([self._stats(p[None], t[None]) for p, t in zip(pred_l, target_l, strict=True)])
                if pred_l
                else torch.zeros(0, self.width, dtype=torch.float64, device=self.device)
            )
        if tags is not None and len(tags) != rows.shape[0]:
            raise ValueError(f"got {len(tags)} tag dicts for {rows.shape[0]} samples")
        self._rows[_TOTAL] += rows.sum(0)
        if self.breakdown and tags is not None:
            for row, sample_tags in zip(rows, tags, strict=True):
                for group in _groups(sample_tags):
                    if group not in self._rows:
                        self._rows[group] = self._zeros()
                    self._rows[group] += row

    @torch.no_grad()
    def update_from_batch(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> None:
        """Binarise foreground ``logits`` (B, 1, h, w) and add them against a collated batch.

        Uses ``batch["mask"]`` (resizing logits to it if needed) or, with
        ``at_original_size``, each ``batch["orig_mask"][i]``; ``batch["tags"]`` if present.
        """
        tags = batch.get("tags")
        if self.at_original_size:
            if "orig_mask" not in batch:
                raise ValueError(
                    "at_original_size needs batch['orig_mask']: build the dataset with return_orig_mask=True"
                )
            targets = [m.to(self.device) for m in batch["orig_mask"]]
            x = logits if logits.dim() == 4 else logits.unsqueeze(1)
            preds = [binarize_logits(x[i : i + 1], t.shape)[0] for i, t in enumerate(targets)]
            self.update(preds, targets, tags=tags)
        else:
            target = batch["mask"].to(self.device).bool()
            self.update(binarize_logits(logits, target.shape[-2:]).to(self.device), target, tags=tags)

    @torch.no_grad()
    def sync(self, group: Any = None) -> ReferringSegmentationMetrics:
        """Sum the accumulators over all DDP ranks in place (a no-op without DDP).

        One ``all_reduce`` of all rows stacked; with a breakdown, the group names are
        first gathered with ``all_gather_object`` so every rank stacks the same rows.
        Call once, after the last :meth:`update`, on every rank.
        """
        if self._synced:
            raise RuntimeError("metrics were already synced; call reset() to start again")
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            names = sorted(k for k in self._rows if k != _TOTAL)
            if self.breakdown:
                gathered: list[Any] = [None] * dist.get_world_size(group)
                dist.all_gather_object(gathered, names, group=group)
                names = sorted(set().union(*gathered))
            order = [_TOTAL, *names]
            stacked = torch.stack([self._rows.get(k, self._zeros()) for k in order])
            dist.all_reduce(stacked, op=dist.ReduceOp.SUM, group=group)
            self._rows = {k: stacked[i].clone() for i, k in enumerate(order)}
        self._synced = True
        return self

    def _summary(self, row: torch.Tensor) -> dict[str, float]:
        values = row.tolist()
        inter, union, iou_sum, count = values[:4]
        out = {
            "oIoU": inter / union if union > 0 else 0.0,
            "mIoU": iou_sum / count if count > 0 else 0.0,
        }
        n = len(self.thresholds)
        for t, hits in zip(self.thresholds, values[4 : 4 + n], strict=True):
            out[f"Pr@{t:g}"] = hits / count if count > 0 else 0.0
        if self.boundary:
            out["bIoU"] = values[4 + n] / count if count > 0 else 0.0
        out["count"] = int(count)
        return out

    def compute(self) -> dict[str, float]:
        """``{"oIoU", "mIoU", "Pr@0.5", ..., "Pr@0.9", "count"}`` (and ``"bIoU"`` with
        ``boundary``); fractions in [0, 1]."""
        return self._summary(self._rows[_TOTAL])

    def compute_breakdown(self) -> dict[str, dict[str, float]]:
        """``{"<tag>=<value>": compute()-style dict}`` for every tag group seen."""
        return {k: self._summary(v) for k, v in sorted(self._rows.items()) if k != _TOTAL}

    def state(self) -> torch.Tensor:
        """The total accumulator row ``[sum_I, sum_U, sum_IoU, count, hits@t...]`` (float64)."""
        return self._rows[_TOTAL].clone()
