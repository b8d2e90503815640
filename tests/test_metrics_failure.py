"""Uncertainty baselines and sample-level failure detection of ``UncertaintyQualityMetrics``."""

from __future__ import annotations

import math

import pytest
import torch

from uncertainty_rrsis.metrics import (
    UncertaintyQualityMetrics,
    average_precision,
    binary_auroc,
    margin_uncertainty,
    risk_coverage,
)


def slow_auroc(scores, labels):
    """Probability that a positive outscores a negative, ties one half (all pairs)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_all_pairs_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    labels = torch.rand(40, generator=g) > 0.6
    assert binary_auroc(scores, labels) == pytest.approx(slow_auroc(scores.tolist(), labels.tolist()), abs=1e-12)
    assert binary_auroc(scores, labels) + binary_auroc(-scores, labels) == pytest.approx(1.0)
    assert math.isnan(binary_auroc(scores, torch.zeros(40, dtype=torch.bool)))


def test_average_precision_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([True, False, True, False])
    # precision at the two positives: 1/1 and 2/3
    assert average_precision(scores, labels) == pytest.approx((1.0 + 2 / 3) / 2)
    tied = torch.tensor([0.5, 0.5, 0.1])
    assert average_precision(tied, torch.tensor([True, False, False])) == pytest.approx(0.5)


def test_risk_coverage_by_hand():
    scores = torch.tensor([0.3, 0.1, 0.2])
    risk = torch.tensor([0.9, 0.0, 0.3])
    coverage, curve, aurc = risk_coverage(scores, risk)
    assert coverage.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert curve.tolist() == pytest.approx([0.0, 0.15, 0.4])
    assert aurc == pytest.approx((0.0 + 0.15 + 0.4) / 3)
    assert risk_coverage(risk, risk)[2] <= aurc <= risk_coverage(-risk, risk)[2]


def test_margin_is_one_at_half_and_zero_when_sure():
    x = torch.tensor([0.0, 20.0, -20.0, math.log(3.0)])
    assert margin_uncertainty(x).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5], abs=1e-6)


def two_samples():
    """Sample 0 right (IoU 1), sample 1 wrong (IoU 0); U high exactly where sample 1 is wrong."""
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True
    logits = torch.full((2, 1, 8, 8), -4.0)
    logits[0, 0, 2:6, 2:6] = 4.0
    logits[1, 0, 0:2, 0:2] = 0.5  # confidently-ish wrong object, low margin there
    u = torch.full((2, 1, 2, 2), -3.0)
    u[1] = 3.0
    return u, logits, {"mask": target, "tags": [{"dense": False}, {"dense": True}]}


def test_update_from_batch_scores_samples_and_baselines():
    u, logits, batch = two_samples()
    metrics = UncertaintyQualityMetrics(bins=100)
    metrics.update_from_batch(u, logits, batch)
    out = metrics.sync().compute()
    assert out["failure/count"] == 2 and out["failure/rate"] == 0.5
    for name in ("u_mask", "u_image", "margin"):
        assert out[f"failure/{name}/AUROC"] == 1.0, name  # the failed sample scores higher
    assert out["failure/oracle/AURC"] == pytest.approx(0.25)  # keep the right one first: (0 + 0.5) / 2
    assert out["failure/u_image/AURC"] == pytest.approx(0.25) and out["failure/random/AURC"] == 0.5
    assert {"margin/AUROC", "margin_pooled/AUROC", "AUROC"} <= set(out)
    # all 20 error pixels are in sample 1, where U^p is high on all 64 pixels; sample 0's 64 correct
    # pixels have low U^p: P(error outscores correct) + half the ties = (64 + 44 / 2) / 108
    assert out["AUROC"] == pytest.approx((64 + 22) / 108, abs=1e-9)
    # the margin sees only the 4 pixels of the unsure wrong object; the 16 missed target pixels are
    # confidently wrong and tie with all 108 correct pixels: (4 + 16 / 2) / 20
    assert out["margin/AUROC"] == pytest.approx(0.6, abs=1e-9)
    breakdown = metrics.compute_breakdown()
    assert breakdown["dense=true"]["failure/rate"] == 1.0 and breakdown["dense=false"]["failure/rate"] == 0.0


def test_u_mask_reads_the_predicted_mask_and_falls_back_to_the_image():
    target = torch.ones(1, 4, 4, dtype=torch.bool)
    logits = torch.full((1, 1, 4, 4), -5.0)
    logits[0, 0, 0, 0] = 5.0  # the prediction is one pixel
    u = torch.full((1, 1, 4, 4), -5.0)
    u[0, 0, 0, 0] = 5.0  # uncertain exactly there
    m = UncertaintyQualityMetrics()
    m.update_from_batch(u, logits, {"mask": target})
    out = m.compute()
    assert out["failure/u_mask/mean"] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-6)
    assert out["failure/u_image/mean"] < 0.1
    empty = UncertaintyQualityMetrics()
    empty.update_from_batch(u, torch.full((1, 1, 4, 4), -5.0), {"mask": target})
    res = empty.compute()
    assert res["failure/u_mask/mean"] == pytest.approx(res["failure/u_image/mean"])


def test_plain_update_reports_no_baselines_or_samples():
    m = UncertaintyQualityMetrics()
    m.update(torch.rand(2, 4, 4), torch.rand(2, 4, 4) > 0.5)
    out = m.compute()
    assert "AUROC" in out and not any(k.startswith(("margin", "failure")) for k in out)


def test_the_pooled_margin_is_pooled_to_the_given_grid():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 32, 32, generator=g) > 0.5
    logits = torch.randn(2, 1, 32, 32, generator=g) * 2
    u = torch.randn(2, 1, 32, 32, generator=g)  # U already resized to the image, as evaluate() passes it
    at_full = UncertaintyQualityMetrics()
    at_full.update_from_batch(u, logits, {"mask": target})
    coarse = UncertaintyQualityMetrics()
    coarse.update_from_batch(u, logits, {"mask": target}, grid=(4, 4))
    full, pooled = at_full.compute(), coarse.compute()
    assert full["margin_pooled/AUROC"] == full["margin/AUROC"]  # a 32 x 32 grid pools nothing
    assert pooled["margin_pooled/AUROC"] != pooled["margin/AUROC"]
    assert pooled["margin/AUROC"] == full["margin/AUROC"] and pooled["AUROC"] == full["AUROC"]


def test_outcome_means_tell_a_score_that_knows_the_errors_from_one_that_knows_the_objects():
    # a 4 x 4 image: target = left half; prediction = top half -> TP top-left, FP top-right,
    # FN bottom-left, TN bottom-right (4 pixels each)
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, :, :2] = True
    logits = torch.full((1, 1, 4, 4), -3.0)
    logits[0, 0, :2] = 1.0
    objects = torch.full((1, 1, 4, 4), -4.0)  # high on the prediction and the target: "where objects are"
    objects[0, 0, :2] = 2.0
    objects[0, 0, :, :2] = 2.0
    m = UncertaintyQualityMetrics()
    m.update_from_batch(objects, logits, {"mask": target})
    out = m.compute()
    hi, lo = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-4.0)).item()
    assert out["outcome/TP/u_mean"] == pytest.approx(hi) and out["outcome/FP/u_mean"] == pytest.approx(hi)
    assert out["outcome/FN/u_mean"] == pytest.approx(hi) and out["outcome/TN/u_mean"] == pytest.approx(lo)
    margin = margin_uncertainty(logits)[0, 0]
    assert out["outcome/TP/margin_mean"] == pytest.approx(float(margin[0, 0]))
    assert out["outcome/TN/margin_mean"] == pytest.approx(float(margin[3, 3]))
    assert all(out[f"outcome/{k}/share"] == pytest.approx(0.25) for k in ("TP", "FP", "FN", "TN"))
    # a score high exactly on the errors (FP and FN) separates them from TP
    errors = torch.full((1, 1, 4, 4), -4.0)
    errors[0, 0, :2, 2:] = 2.0
    errors[0, 0, 2:, :2] = 2.0
    e = UncertaintyQualityMetrics()
    e.update_from_batch(errors, logits, {"mask": target})
    res = e.compute()
    assert res["outcome/FP/u_mean"] - res["outcome/TP/u_mean"] == pytest.approx(hi - lo)
    # the plain update feeds no outcome (it has no prediction)
    plain = UncertaintyQualityMetrics()
    plain.update(torch.rand(1, 4, 4), torch.rand(1, 4, 4) > 0.5)
    assert not any(k.startswith("outcome/") for k in plain.compute())
