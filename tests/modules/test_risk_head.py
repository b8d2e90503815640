"""The optional per-sample risk head (beyond the paper): statistics, loss, metrics, wiring."""

from __future__ import annotations

import math

import pytest
import torch

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss, RiskGuidedOutput
from uncertainty_rrsis.metrics import UncertaintyQualityMetrics
from uncertainty_rrsis.modules import RISK_STATISTICS, SampleRiskHead

from helpers.decoders import ToyPairDecoder, toy_batch


def test_statistics_by_hand():
    u = torch.full((1, 1, 2, 2), -2.0)
    u[0, 0, 0, 0] = 2.0
    logits = torch.full((1, 1, 4, 4), -3.0)
    logits[0, 0, :2, :2] = 3.0  # the predicted mask: the top-left quarter, where U is high
    stats = SampleRiskHead.statistics(u, logits)[0]
    prob = torch.sigmoid(torch.nn.functional.interpolate(u, size=(4, 4), mode="bilinear", align_corners=False))
    margin = 1 - (2 * torch.sigmoid(torch.tensor(3.0)) - 1).abs()
    expected = [prob.mean(), prob.max(), prob[0, 0, :2, :2].mean(), prob.flatten().topk(2).values.mean(),
                margin, margin, torch.tensor(0.25)]
    assert len(stats) == len(RISK_STATISTICS)
    torch.testing.assert_close(stats, torch.stack(expected).float(), rtol=1e-5, atol=1e-6)


def test_starts_at_one_half_and_learns_from_the_failures():
    torch.manual_seed(0)
    model = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4, risk_head=True)
    features, text, pad, target = toy_batch()
    out = model(features, text, pad)
    assert isinstance(out, RiskGuidedOutput) and out.risk.shape == (2,) and torch.equal(out.risk, torch.zeros(2))
    parts = RiskGuidedLoss(lambda_risk=0.5)(out, target, step=0)
    assert parts.risk is not None and parts.risk.item() == pytest.approx(math.log(2), abs=1e-6)
    torch.testing.assert_close(parts.total, parts.seg + parts.unc + parts.ref + 0.5 * parts.risk)
    parts.total.backward()
    assert model.risk.mlp[-1].weight.grad.abs().sum() > 0
    assert "loss/risk" in parts.as_floats()
    plain = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4)
    assert isinstance(plain(features, text, pad), RiskGuidedOutput)
    assert plain.risk is None and plain(features, text, pad).risk is None  # one output type, risk left empty
    assert "loss/risk" not in RiskGuidedLoss()(plain(features, text, pad), target).as_floats()


def test_the_metric_scores_the_risk_when_given():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True
    logits = torch.full((2, 1, 8, 8), -4.0)
    logits[0, 0, 2:6, 2:6] = 4.0  # sample 0 right, sample 1 empty: failed
    m = UncertaintyQualityMetrics()
    m.update_from_batch(torch.zeros(2, 1, 2, 2), logits, {"mask": target}, risk=torch.tensor([-3.0, 3.0]))
    out = m.compute()
    assert out["failure/risk/AUROC"] == 1.0 and out["failure/risk/AURC"] == pytest.approx(0.25)  # (0 + 1/2) / 2
    plain = UncertaintyQualityMetrics()
    plain.update_from_batch(torch.zeros(2, 1, 2, 2), logits, {"mask": target})
    assert "failure/risk/AUROC" not in plain.compute()


def test_reference_model_option(tiny_config, tiny_batch):
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import CroBIMU

    model = CroBIMU(tiny_config.replace(risk_head=True))
    ids, mask = tiny_batch
    out = model(torch.randn(2, 3, 64, 64), ids, mask)
    assert out.risk.shape == (2,)
    counts = model.num_parameters()
    assert counts["risk"] == sum(p.numel() for p in model.decoder.risk.parameters()) > 0
    assert counts["uncertainty"] == counts["rus"] + counts["ugf"] + counts["udlr"] + counts["risk"]
