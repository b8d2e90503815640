"""The segmentation loss (BCE + Dice, Eq. 17) and the objective of Eq. 18 (RiskGuidedLoss)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from uncertainty_rrsis import RiskGuidedLoss, RiskGuidedOutput
from uncertainty_rrsis.losses import BCEDiceLoss, OnlineErrorLoss, dice_loss

from helpers.decoders import toy_batch, toy_wrapper


def dice_by_hand(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> float:
    """Mean over samples of 1 - (2 sum p t + s) / (sum p + sum t + s), with Python floats."""
    losses = []
    for p_map, t_map in zip(logits, target):
        p = [1 / (1 + math.exp(-float(v))) for v in p_map.flatten()]
        t = [float(v) for v in t_map.flatten()]
        inter = sum(a * b for a, b in zip(p, t))
        losses.append(1 - (2 * inter + smooth) / (sum(p) + sum(t) + smooth))
    return sum(losses) / len(losses)


def test_dice_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 1, 4, 5, generator=g) > 0.5).double()
    target[2] = 0.0  # an empty target
    assert dice_loss(logits, target).item() == pytest.approx(dice_by_hand(logits, target), rel=1e-12)
    assert dice_loss(logits, target, smooth=0.1).item() == pytest.approx(
        dice_by_hand(logits, target, 0.1), rel=1e-12
    )
    confident = torch.where(target > 0, 30.0, -30.0).double()  # a perfect, confident prediction
    assert dice_loss(confident[:2], target[:2]).item() == pytest.approx(0.0, abs=1e-9)
    assert dice_loss(-confident[:2], target[:2]).item() > 0.9  # the opposite prediction


@pytest.mark.parametrize("form", ["bool_bhw", "float_b1hw"])
def test_bce_dice_is_the_weighted_sum_on_resized_logits(form):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=g)  # coarser than the target: resized on logits
    mask = torch.rand(2, 8, 8, generator=g) > 0.6
    target = mask if form == "bool_bhw" else mask[:, None].float()
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(up, mask[:, None].float())
    dice = dice_by_hand(up, mask[:, None].float())
    got = BCEDiceLoss(bce_weight=0.7, dice_weight=1.5)(logits, target)
    assert got.shape == () and got.item() == pytest.approx(0.7 * bce.item() + 1.5 * dice, rel=1e-5)
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(bce.item() + dice, rel=1e-5)


def test_bce_dice_computes_in_float32_and_reaches_the_logits():
    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    target = torch.rand(2, 6, 6) > 0.5
    reference = BCEDiceLoss()(logits, target)
    low = BCEDiceLoss()(logits.bfloat16(), target)
    assert low.dtype == torch.float32
    # only the rounding of the logits to bf16 (8 significant bits) remains: ~2e-3 relative
    assert low.item() == pytest.approx(reference.item(), rel=1e-2)
    reference.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_loss_parts_follow_the_ablation_row():
    features, text, pad, target = toy_batch()
    full = RiskGuidedLoss(lambda_unc=0.5, lambda_ref=2.0)(toy_wrapper("pair")(features, text, pad), target, step=5)
    torch.testing.assert_close(full.total, full.seg + 0.5 * full.unc + 2.0 * full.ref)
    assert full.unc > 0 and full.ref > 0
    base_out = toy_wrapper("pair", use_fusion=False, use_refinement=False)(features, text, pad)
    base = RiskGuidedLoss()(base_out, target)
    assert base.unc.item() == 0 and base.ref.item() == 0 and torch.equal(base.total, base.seg)
    assert set(full.as_floats()) == {"loss/total", "loss/seg", "loss/unc", "loss/ref"}
    warm = RiskGuidedLoss(warmup_steps=100)(toy_wrapper("pair")(features, text, pad), target, step=5)
    assert warm.unc.item() == 0


def test_each_part_is_its_loss_on_its_output():
    g = torch.Generator().manual_seed(2)
    out = RiskGuidedOutput(
        logits=torch.randn(2, 1, 8, 8, generator=g),
        coarse_logits=torch.randn(2, 1, 8, 8, generator=g),
        uncertainty=torch.randn(2, 1, 2, 2, generator=g),
        refine_mask=torch.rand(2, 1, 8, 8, generator=g),
    )
    target = torch.rand(2, 16, 16, generator=g) > 0.5
    parts = RiskGuidedLoss(lambda_unc=0.3, lambda_ref=0.6)(out, target, step=4)
    seg = BCEDiceLoss()
    torch.testing.assert_close(parts.seg, seg(out.coarse_logits, target))  # L_seg(P_fg)
    torch.testing.assert_close(parts.ref, seg(out.logits, target))  # L_seg(P_ref)
    torch.testing.assert_close(parts.unc, OnlineErrorLoss()(out.uncertainty, out.coarse_logits, target))
    torch.testing.assert_close(parts.total, parts.seg + 0.3 * parts.unc + 0.6 * parts.ref)
    # no refinement mask: no refinement term, whatever the logits
    no_ref = RiskGuidedLoss()(out._replace(refine_mask=None), target)
    assert no_ref.ref.item() == 0 and no_ref.total.item() == pytest.approx((no_ref.seg + no_ref.unc).item())


def test_custom_parts_are_used():
    calls = []

    class Recording(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, *args, **kwargs):
            calls.append((self.value, args[0].shape, kwargs.get("step")))
            return torch.tensor(self.value)

    out = RiskGuidedOutput(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 1, 1),
                           torch.zeros(1, 1, 4, 4))
    loss = RiskGuidedLoss(lambda_unc=2.0, lambda_ref=3.0, seg_loss=Recording(1.0), uncertainty_loss=Recording(10.0))
    parts = loss(out, torch.zeros(1, 4, 4, dtype=torch.bool), step=7)
    assert parts.total.item() == 1.0 + 2.0 * 10.0 + 3.0 * 1.0
    assert calls == [(1.0, (1, 1, 4, 4), None), (10.0, (1, 1, 1, 1), 7), (1.0, (1, 1, 4, 4), None)]


def test_lambda_ref_zero_supervises_the_refined_logits_so_udlr_learns():
    """The paper's lambda_ref = 0 (no auxiliary refinement term): L_seg then reads P_ref."""
    features, text, pad, target = toy_batch()
    model = toy_wrapper("pair")
    out = model(features, text, pad)
    parts = RiskGuidedLoss(lambda_ref=0.0)(out, target, step=5)
    seg = BCEDiceLoss()
    torch.testing.assert_close(parts.seg, seg(out.logits, target))
    assert parts.ref.item() == 0
    parts.total.backward()
    head = model.refinement.head
    assert head[-1].weight.grad.abs().sum() > 0  # the last conv starts at zero; its gradient does not
    # one step later the zero-initialised branch is live and the whole head learns
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    RiskGuidedLoss(lambda_ref=0.0)(model(features, text, pad), target, step=5).total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # with a literal L_seg(P_fg) the head would get nothing: the coarse logits do not depend on it
    model.zero_grad()
    out = model(features, text, pad)
    seg(out.coarse_logits, target).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in head.parameters())
