"""The optional risk heads (beyond the paper): what they read, how they start and learn, their loss,
their metrics, and their wiring into the wrapper and the reference model."""

from __future__ import annotations

import math

import pytest
import torch

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss, RiskGuidedOutput
from uncertainty_rrsis.metrics import UncertaintyQualityMetrics
from uncertainty_rrsis.modules import PixelRiskHead, SampleRiskHead

from helpers.decoders import ToyPairDecoder, toy_batch

C, D = 16, 16


def head_inputs(seed: int = 0, batch: int = 4):
    g = torch.Generator().manual_seed(seed)
    feature = torch.randn(batch, C, 8, 8, generator=g)
    logits = torch.randn(batch, 1, 8, 8, generator=g) * 4
    coarse = torch.randn(batch, 1, 8, 8, generator=g) * 4
    u = torch.randn(batch, 1, 2, 2, generator=g)
    text = torch.randn(batch, 5, D, generator=g)
    pad = torch.zeros(batch, 5, dtype=torch.bool)
    pad[0, 3:] = True
    return feature, logits, coarse, u, text, pad


def test_the_sample_head_starts_at_one_half_and_reads_the_sentence():
    torch.manual_seed(0)
    head = SampleRiskHead(C, D)
    risk, quality = head(*head_inputs())
    assert risk.shape == quality.shape == (4,) and torch.equal(risk, torch.zeros(4)) and torch.equal(quality, risk)
    torch.nn.init.normal_(head.mlp[-1].weight)  # a trained head
    feature, logits, coarse, u, text, pad = head_inputs()
    before = head(feature, logits, coarse, u, text, pad)[0]
    other = text.clone()
    other[1] = torch.randn(5, D)  # another sentence for sample 1 only
    after = head(feature, logits, coarse, u, other, pad)[0]
    assert (after[1] - before[1]).abs() > 1e-4 and torch.equal(after[[0, 2, 3]], before[[0, 2, 3]])
    padded = text.clone()
    padded[0, 3:] = 1e3  # padding tokens are not read
    assert torch.equal(head(feature, logits, coarse, u, padded, pad)[0], before)


def test_the_sample_head_tells_which_candidate_the_prediction_covers():
    """Two objects in the feature map; the same sentence, the prediction on one or on the other: a
    head reads the pooled features of the predicted object and of the candidate left out."""
    torch.manual_seed(0)
    head = SampleRiskHead(C, D)
    torch.nn.init.normal_(head.mlp[-1].weight)
    feature = torch.zeros(1, C, 8, 8)
    feature[0, :8, :4, :4] = 1.0  # object A (channels 0-7)
    feature[0, 8:, 4:, 4:] = 1.0  # object B (channels 8-15)
    u = torch.full((1, 1, 8, 8), 3.0)  # U lights up both
    on_a = torch.full((1, 1, 8, 8), -5.0)
    on_a[0, 0, :4, :4] = 5.0
    on_b = torch.full((1, 1, 8, 8), -5.0)
    on_b[0, 0, 4:, 4:] = 5.0
    text = torch.randn(1, 3, D)
    risk_a = head(feature, on_a, on_a, u, text)[0]
    risk_b = head(feature, on_b, on_b, u, text)[0]
    assert (risk_a - risk_b).abs() > 1e-3  # the masks have the same area and margin: only the features differ


def test_detach_keeps_the_model_out_of_the_head_gradient():
    feature, logits, coarse, u, text, pad = head_inputs()
    for detach in (True, False):
        f, t = feature.clone().requires_grad_(), text.clone().requires_grad_()
        head = SampleRiskHead(C, D, detach=detach)
        torch.nn.init.normal_(head.mlp[-1].weight)
        risk, quality = head(f, logits, coarse, u, t, pad)
        (risk.sum() + quality.sum()).backward()
        assert (f.grad is None) == detach and (t.grad is None) == detach


def test_the_pixel_head_starts_at_zero_on_the_feature_grid():
    feature, logits, coarse, u, _, _ = head_inputs()
    head = PixelRiskHead(C)
    out = head(feature, torch.nn.functional.interpolate(logits, size=(16, 16)), coarse, u)
    assert out.shape == (4, 1, 8, 8) and torch.equal(out, torch.zeros_like(out))


def test_the_wrapper_returns_and_trains_both_heads():
    torch.manual_seed(0)
    model = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4, risk_head=True, pixel_risk_head=True)
    features, text, pad, target = toy_batch()
    out = model(features, text, pad)
    assert isinstance(out, RiskGuidedOutput)
    assert out.risk.shape == out.quality.shape == (2,) and out.error_map.shape == (2, 1, 16, 16)
    parts = RiskGuidedLoss(lambda_risk=0.5)(out, target, step=0)
    assert parts.risk is not None and parts.pixel_risk is not None
    torch.testing.assert_close(parts.total, parts.seg + parts.unc + parts.ref + 0.5 * (parts.risk + parts.pixel_risk))
    # at init both logits are 0: a BCE of log 2 against the failure and against the IoU, whatever they are
    assert parts.risk.item() == pytest.approx(2 * math.log(2), abs=1e-5)
    parts.total.backward()
    assert model.risk.mlp[-1].weight.grad.abs().sum() > 0 and model.pixel_risk.head[-1].weight.grad.abs().sum() > 0
    assert {"loss/risk", "loss/pixel_risk"} <= set(parts.as_floats())
    plain = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4)
    out = plain(features, text, pad)
    assert out.risk is None and out.quality is None and out.error_map is None
    assert "loss/risk" not in RiskGuidedLoss()(out, target).as_floats()


def test_the_heads_need_rus():
    with pytest.raises(ValueError, match="risk heads read U"):
        RiskGuidedDecoder(ToyPairDecoder(16), 16, use_fusion=False, use_refinement=False, risk_head=True)


def test_the_metric_scores_every_sample_score_and_the_calibration():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True
    logits = torch.full((2, 1, 8, 8), -4.0)
    logits[0, 0, 2:6, 2:6] = 4.0  # sample 0 right (IoU 1), sample 1 empty: failed (IoU 0)
    coarse = logits.clone()
    coarse[0, 0, 2:4, 2:6] = -4.0  # the coarse prediction of sample 0 covers half the final one
    m = UncertaintyQualityMetrics()
    m.update_from_batch(torch.zeros(2, 1, 2, 2), logits, {"mask": target}, coarse_logits=coarse,
                        risk=torch.tensor([-3.0, 3.0]), quality=torch.tensor([math.log(3), -math.log(3)]),
                        error_map=torch.zeros(2, 1, 4, 4), sample_scores={"tta": torch.tensor([0.0, 1.0])})
    out = m.compute()
    assert out["failure/risk/AUROC"] == 1.0 and out["failure/risk/AURC"] == pytest.approx(0.25)  # (0 + 1/2) / 2
    assert out["failure/quality/AUROC"] == 1.0 and out["failure/tta/AUROC"] == 1.0
    assert out["failure/disagreement/mean"] == pytest.approx(0.25)  # 1 - 1/2 for sample 0; both empty: 0
    assert out["quality/MAE"] == pytest.approx(0.25)  # predicted 0.75 and 0.25 for IoU 1 and 0
    assert out["quality/MAE_constant"] == pytest.approx(0.5) and out["quality/bias"] == pytest.approx(0.0)
    assert out["error_map/AUROC"] == pytest.approx(0.5)  # a constant map ranks nothing
    table = m.reliability(bins=4)
    assert [(r["from"], r["count"], r["actual"]) for r in table] == [(0.0, 1.0, 0.0), (0.75, 1.0, 1.0)]
    plain = UncertaintyQualityMetrics()
    plain.update_from_batch(torch.zeros(2, 1, 2, 2), logits, {"mask": target})
    keys = plain.compute()
    assert "failure/risk/AUROC" not in keys and "quality/MAE" not in keys and "error_map/AUROC" not in keys
    assert plain.reliability() == []


def test_reference_model_option(tiny_config, tiny_batch):
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import CroBIMU

    model = CroBIMU(tiny_config.replace(risk_head=True, pixel_risk_head=True))
    ids, mask = tiny_batch
    out = model(torch.randn(2, 3, 64, 64), ids, mask)
    assert out.risk.shape == out.quality.shape == (2,) and out.error_map.shape == (2, 1, 16, 16)
    counts = model.num_parameters()
    heads = sum(p.numel() for p in model.decoder.risk.parameters()) + sum(
        p.numel() for p in model.decoder.pixel_risk.parameters())
    assert counts["risk"] == heads > 0
    assert counts["uncertainty"] == counts["rus"] + counts["ugf"] + counts["udlr"] + counts["risk"]
