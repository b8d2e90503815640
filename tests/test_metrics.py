"""The field's metrics (oIoU, mIoU, Pr@0.5-0.9; see docs/datasets.md) and the uncertainty-quality metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uncertainty_rrsis.metrics import ReferringSegmentationMetrics, UncertaintyQualityMetrics, binarize_logits


def _masks(pairs, size=(4, 5)):
    """Build (B, H, W) bool masks whose first k pixels (row-major) are set, from (k_pred, k_gt, k_overlap)."""
    preds, gts = [], []
    n = size[0] * size[1]
    for k_pred, k_gt, k_both in pairs:
        p = torch.zeros(n, dtype=torch.bool)
        g = torch.zeros(n, dtype=torch.bool)
        g[:k_gt] = True
        p[k_gt - k_both : k_gt - k_both + k_pred] = True  # overlap of k_both pixels
        preds.append(p.view(size))
        gts.append(g.view(size))
    return torch.stack(preds), torch.stack(gts)


def test_hand_computed_cases():
    pred, gt = _masks(
        [
            (3, 0, 0),  # empty target, non-empty prediction: IoU 0
            (0, 4, 0),  # empty prediction: IoU 0
            (0, 0, 0),  # both empty: IoU 0 (LAVT), union 0
            (2, 2, 1),  # I=1, U=3
            (2, 1, 1),  # I=1, U=2: IoU exactly 0.5
            (10, 9, 9),  # I=9, U=10: IoU exactly 0.9
        ]
    )
    m = ReferringSegmentationMetrics()
    m.update(pred, gt)
    out = m.compute()
    assert out["count"] == 6
    assert out["oIoU"] == pytest.approx((0 + 0 + 0 + 1 + 1 + 9) / (3 + 4 + 0 + 3 + 2 + 10))
    assert out["mIoU"] == pytest.approx((1 / 3 + 0.5 + 0.9) / 6)
    assert out["Pr@0.5"] == pytest.approx(2 / 6)  # 0.5 counts (IoU >= t)
    assert out["Pr@0.6"] == out["Pr@0.7"] == out["Pr@0.8"] == pytest.approx(1 / 6)
    assert out["Pr@0.9"] == pytest.approx(1 / 6)  # exactly 0.9 counts
    assert set(out) == {"oIoU", "mIoU", "Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "count"}
    assert m.state().tolist()[:4] == [11.0, 22.0, pytest.approx(1 / 3 + 0.5 + 0.9), 6.0]


def test_empty_metrics_and_bad_input():
    m = ReferringSegmentationMetrics()
    assert m.compute()["count"] == 0 and m.compute()["mIoU"] == 0.0
    with pytest.raises(ValueError, match="bool"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        m.update(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool))


def _reference(preds, gts, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9)):
    """Slow per-sample reference in plain Python."""
    ious, si, su = [], 0, 0
    for p, g in zip(preds, gts, strict=True):
        p, g = p.numpy().ravel().tolist(), g.numpy().ravel().tolist()
        i = sum(1 for a, b in zip(p, g, strict=True) if a and b)
        u = sum(1 for a, b in zip(p, g, strict=True) if a or b)
        ious.append(i / u if u else 0.0)
        si, su = si + i, su + u
    out = {"oIoU": si / su, "mIoU": sum(ious) / len(ious), "count": len(ious)}
    for t in thresholds:
        out[f"Pr@{t:g}"] = sum(1 for v in ious if v >= t) / len(ious)
    return out


def test_agrees_with_slow_reference_on_random_masks():
    g = torch.Generator().manual_seed(0)
    m = ReferringSegmentationMetrics()
    preds, gts = [], []
    for _ in range(5):
        gt = torch.rand(8, 12, 10, generator=g) < torch.rand(8, 1, 1, generator=g)
        noise = torch.rand(8, 12, 10, generator=g) < torch.rand(8, 1, 1, generator=g) * 0.4
        pred = gt ^ noise
        m.update(pred, gt)
        preds += list(pred)
        gts += list(gt)
    ref = _reference(preds, gts)
    out = m.compute()
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < out["Pr@0.5"] < 1  # the random cases straddle the thresholds


def test_tag_breakdown():
    pred, gt = _masks([(2, 2, 2), (2, 2, 0), (2, 2, 1)])
    m = ReferringSegmentationMetrics()
    m.update(
        pred,
        gt,
        tags=[
            {"category": "ship", "thin": False, "area": 0.3},
            {"category": "road", "thin": True},
            {"category": "ship", "thin": False},
        ],
    )
    parts = m.compute_breakdown()
    assert set(parts) == {"category=ship", "category=road", "thin=false", "thin=true"}  # floats skipped
    assert parts["category=ship"]["count"] == 2
    assert parts["category=ship"]["mIoU"] == pytest.approx((1 + 1 / 3) / 2)
    assert parts["thin=true"]["mIoU"] == 0.0
    with pytest.raises(ValueError, match="tag dicts"):
        m.update(pred, gt, tags=[{}])


def test_original_size_evaluation():
    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[0, :, :, :2] = 5.0  # left half
    logits[1, :, 0, 0] = 0.0  # probability exactly 0.5 is background
    assert binarize_logits(logits).sum() == 8
    batch = {
        "mask": torch.zeros(2, 4, 4, dtype=torch.bool),
        "orig_mask": [torch.zeros(6, 8, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)],
        "tags": [{}, {}],
    }
    batch["orig_mask"][0][:, :4] = True
    batch["mask"][0, :, :2] = True
    m = ReferringSegmentationMetrics(at_original_size=True)
    m.update_from_batch(logits, batch)
    out = m.compute()
    assert out["count"] == 2 and out["mIoU"] == pytest.approx(0.5)  # sample 1: both empty -> 0
    m_in = ReferringSegmentationMetrics()
    m_in.update_from_batch(logits, batch)
    assert m_in.compute()["mIoU"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="return_orig_mask=True"):
        ReferringSegmentationMetrics(at_original_size=True).update_from_batch(logits, {"mask": batch["mask"]})
    lists = ReferringSegmentationMetrics()
    lists.update(
        [torch.ones(2, 3, dtype=torch.bool), torch.ones(5, 1, dtype=torch.bool)],
        [torch.ones(2, 3, dtype=torch.bool), torch.zeros(5, 1, dtype=torch.bool)],
    )
    assert lists.compute()["oIoU"] == pytest.approx(6 / 11)


def test_sync_without_process_group_is_noop_and_guards_double_sync():
    m = ReferringSegmentationMetrics()
    pred, gt = _masks([(2, 2, 1)])
    m.update(pred, gt)
    before = m.compute()
    assert m.sync().compute() == before
    with pytest.raises(RuntimeError, match="already synced"):
        m.sync()
    with pytest.raises(RuntimeError, match="reset"):
        m.update(pred, gt)
    m.reset()
    assert m.compute()["count"] == 0


# -------------------------------------------------------------------- uncertainty quality
def _exact_auroc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def _exact_ap(scores, labels):
    ap, tp_prev = 0.0, 0
    for t in np.unique(scores)[::-1]:
        sel = scores >= t
        tp = int((labels & sel).sum())
        ap += (tp - tp_prev) / labels.sum() * tp / sel.sum()
        tp_prev = tp
    return ap


def test_uncertainty_metrics_match_exact_on_bin_grid():
    rng = np.random.default_rng(0)
    bins = 50
    labels = rng.random((3, 9, 11)) < 0.25
    raw = np.where(labels, rng.beta(3, 2, labels.shape), rng.beta(2, 3, labels.shape))
    scores = (np.floor(raw * bins) + 0.5) / bins  # on the bin grid: histogram is exact
    m = UncertaintyQualityMetrics(bins=bins)
    m.update(torch.from_numpy(scores[:2]).float(), torch.from_numpy(labels[:2]))
    m.update(torch.from_numpy(scores[2:]), torch.from_numpy(labels[2:]))
    out = m.compute()
    flat_s, flat_l = scores.ravel(), labels.ravel()
    assert out["AUROC"] == pytest.approx(_exact_auroc(flat_s, flat_l), abs=1e-12)
    assert out["AUPRC"] == pytest.approx(_exact_ap(flat_s, flat_l), abs=1e-12)
    assert out["error_rate"] == pytest.approx(flat_l.mean()) and out["pixels"] == flat_l.size
    assert 0.5 < out["AUROC"] < 1


def test_uncertainty_metrics_close_to_exact_with_default_bins():
    rng = np.random.default_rng(1)
    labels = rng.random(4000) < 0.1
    scores = np.clip(np.where(labels, rng.normal(0.7, 0.2, 4000), rng.normal(0.4, 0.2, 4000)), 0, 1)
    m = UncertaintyQualityMetrics()
    m.update(torch.from_numpy(scores).view(1, 40, 100), torch.from_numpy(labels).view(1, 40, 100))
    out = m.compute()
    assert out["AUROC"] == pytest.approx(_exact_auroc(scores, labels), abs=2e-3)
    assert out["AUPRC"] == pytest.approx(_exact_ap(scores, labels), abs=5e-3)
    order = np.argsort(-scores, kind="stable")
    for frac in (0.05, 0.10, 0.20):
        exact = labels[order[: int(frac * labels.size)]].sum() / labels.sum()
        assert out[f"caught@{frac * 100:g}%"] == pytest.approx(exact, abs=0.01)


def test_uncertainty_hand_cases():
    # 100 pixels, 10 errors, errors are the 10 most uncertain: a perfect map
    p = torch.linspace(0.0, 0.99, 100).view(1, 10, 10)
    err = (p >= p.flatten().sort().values[90]).view(1, 10, 10)
    m = UncertaintyQualityMetrics(bins=100)
    m.update(p, err)
    out = m.compute()
    assert out["AUROC"] == pytest.approx(1.0) and out["AUPRC"] == pytest.approx(1.0)
    assert out["caught@5%"] == pytest.approx(0.5) and out["caught@10%"] == pytest.approx(1.0)
    assert out["caught@20%"] == pytest.approx(1.0) and out["error_rate"] == pytest.approx(0.1)
    # an inverted map
    inv = UncertaintyQualityMetrics(bins=100)
    inv.update(1 - p, err)
    assert inv.compute()["AUROC"] == pytest.approx(0.0) and inv.compute()["caught@20%"] == pytest.approx(0.0)
    # no errors at all: AUROC undefined
    none = UncertaintyQualityMetrics()
    none.update(p, torch.zeros_like(err))
    assert math.isnan(none.compute()["AUROC"]) and none.compute()["error_rate"] == 0
    # valid mask drops pixels
    v = UncertaintyQualityMetrics(bins=100)
    v.update(p, err, valid=~err)
    assert v.compute()["pixels"] == 90


def test_uncertainty_bad_input():
    m = UncertaintyQualityMetrics()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(torch.full((1, 2, 2), 3.0), torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="same"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


def test_boundary_band_and_boundary_iou_by_hand():
    from uncertainty_rrsis.metrics import boundary_iou, mask_boundary

    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 1:6, 1:6] = True  # a 5 x 5 square
    band = mask_boundary(mask, 1)
    assert band.sum() == 25 - 9 and not band[0, 3, 3] and band[0, 1, 1]
    edge = torch.ones(1, 4, 4, dtype=torch.bool)  # touches the border: the border is its contour
    assert mask_boundary(edge, 1).sum() == 16 - 4
    shifted = torch.zeros_like(mask)
    shifted[0, 1:6, 2:7] = True
    # bands of width 1 (diagonal 9.9 x 0.02 -> 1 px): 16 pixels each, overlapping in 8 + 2 = 10
    got = boundary_iou(mask, shifted)
    a, b = mask_boundary(mask, 1), mask_boundary(shifted, 1)
    assert float(got) == pytest.approx(float((a & b).sum() / (a | b).sum()))
    assert float(boundary_iou(mask, mask)) == 1.0


def test_boundary_option_adds_mean_boundary_iou():
    pred = torch.zeros(2, 16, 16, dtype=torch.bool)
    pred[:, 4:12, 4:12] = True
    gt = pred.clone()
    gt[1, 4:12, 5:13] = True
    gt[1, 4:12, 4] = False
    m = ReferringSegmentationMetrics(boundary=True)
    m.update(pred, gt)
    out = m.compute()
    from uncertainty_rrsis.metrics import boundary_iou

    assert out["bIoU"] == pytest.approx(float(boundary_iou(pred, gt).mean()))
    assert out["bIoU"] < out["mIoU"] <= 1.0 and "bIoU" not in ReferringSegmentationMetrics().compute()
