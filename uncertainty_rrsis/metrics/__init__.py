"""Evaluation metrics: the field's referring-segmentation protocol and uncertainty quality.

Protocol (the LAVT / RMSIN / CroBIM convention), per sample:
``I = |pred & gt|``, ``U = |pred | gt|``, ``IoU = I / U`` and **IoU = 0 when U = 0**.
Over a split: ``oIoU = sum I / sum U``, ``mIoU`` = mean per-sample IoU, ``Pr@t`` = share of
samples with ``IoU >= t`` for t in {0.5, 0.6, 0.7, 0.8, 0.9}. Predictions are binarised
at probability 0.5 (``logit > 0``). Every sentence counts once.

Accumulators are float64 tensors ``[sum_I, sum_U, sum_IoU, count, hits@t...]`` on a
configurable device, so :meth:`ReferringSegmentationMetrics.sync` is one ``all_reduce``
(shard the split across ranks *without* padding so each sample is counted once).

Uncertainty quality (:class:`UncertaintyQualityMetrics`) asks whether ``U^p`` predicts the
model's errors, next to the free baseline every model has (the margin of its own logits):
AUROC and AUPRC as a score for error pixels and the share of error pixels caught in the top
5/10/20 % most uncertain pixels, from fixed histograms (memory does not grow with the split,
ranks sum with one ``all_reduce``); and, per sample, how well a score detects a failed sample
(IoU < 0.5) and ranks samples for selective prediction (risk-coverage, AURC).

Submodules (everything public is importable from here):

* ``segmentation``: the field's protocol, :class:`ReferringSegmentationMetrics`,
  :func:`per_sample_iou`, :func:`boundary_iou` and :func:`mask_boundary`,
  :func:`binarize_logits` and :data:`THRESHOLDS`;
* ``uncertainty``: :class:`UncertaintyQualityMetrics`, the baseline :func:`margin_uncertainty`
  and :data:`SAMPLE_SCORES`;
* ``ranking``: the exact rankings :func:`binary_auroc`, :func:`average_precision` and
  :func:`risk_coverage`.

Axis letters: B batch, H/W mask height/width, S input size.
"""

from __future__ import annotations

from . import segmentation, uncertainty
from .ranking import average_precision, binary_auroc, risk_coverage
from .segmentation import (
    ReferringSegmentationMetrics,
    binarize_logits,
    boundary_iou,
    mask_boundary,
    per_sample_iou,
)
from .uncertainty import UncertaintyQualityMetrics, margin_uncertainty

# Bound here too (the same objects), so that the API reference shows their doc comments.
#: Precision thresholds of the field.
THRESHOLDS: tuple[float, ...] = segmentation.THRESHOLDS
#: Sample-level scores of :class:`UncertaintyQualityMetrics` (higher = more likely wrong).
SAMPLE_SCORES: tuple[str, ...] = uncertainty.SAMPLE_SCORES

__all__ = [
    "THRESHOLDS",
    "ReferringSegmentationMetrics",
    "UncertaintyQualityMetrics",
    "per_sample_iou",
    "boundary_iou",
    "mask_boundary",
    "binarize_logits",
    "margin_uncertainty",
    "binary_auroc",
    "average_precision",
    "risk_coverage",
    "SAMPLE_SCORES",
]
