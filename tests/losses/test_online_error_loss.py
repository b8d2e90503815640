"""OnlineErrorLoss (L_unc), Eq. 4-8: numerics, weights, warm-up, gradients, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from uncertainty_rrsis import OnlineErrorLoss

from helpers.reference import gaussian_blur_by_hand


def reference_loss(unc, seg, target, *, lam=1.0, delta=0.5, eps=1e-6, blur=None, pixel_weighting=True):
    """Eq. 4-8 sample by sample, pixel by pixel; z = e, or e blurred with a ``blur``-tap Gaussian."""
    b, _, h, w = target.shape
    u = F.interpolate(unc, size=(h, w), mode="bilinear", align_corners=False)
    p = F.interpolate(seg, size=(h, w), mode="bilinear", align_corners=False)
    total = 0.0
    for i in range(b):
        pred = [[float(p[i, 0, y, x]) > 0 for x in range(w)] for y in range(h)]
        gt = [[bool(target[i, 0, y, x]) for x in range(w)] for y in range(h)]
        inter = sum(pred[y][x] and gt[y][x] for y in range(h) for x in range(w))
        union = sum(pred[y][x] or gt[y][x] for y in range(h) for x in range(w))
        iou = inter / union if union else 1.0
        w_sample = 1 + lam * (iou < delta)
        err = torch.tensor([[float(pred[y][x] != gt[y][x]) for x in range(w)] for y in range(h)], dtype=torch.float64)
        z = (gaussian_blur_by_hand(err[None, None], blur)[0, 0] if blur else err).tolist()
        n1 = sum(map(sum, z))
        n0 = h * w - n1
        ratio = (n0 + eps) / (n1 + eps)
        for y in range(h):
            for x in range(w):
                logit = float(u[i, 0, y, x])
                bce = -(z[y][x] * math.log(1 / (1 + math.exp(-logit)))
                        + (1 - z[y][x]) * math.log(1 / (1 + math.exp(logit))))
                w_pixel = 1 + z[y][x] * (ratio - 1) if pixel_weighting else 1.0
                total += w_sample * w_pixel * bce
    return total / (b * h * w)


@pytest.mark.parametrize(("unc_size", "seg_size"), [((3, 3), (6, 6)), ((12, 12), (6, 6)), ((2, 5), (9, 7))])
def test_matches_hand_written_equation(unc_size, seg_size):
    torch.manual_seed(0)
    unc = torch.randn(3, 1, *unc_size).double()
    seg = torch.randn(3, 1, *seg_size).double()
    target = torch.rand(3, 1, 8, 8) > 0.6
    target[2] = False  # empty target
    seg[2] = -1.0  # empty prediction: empty union -> IoU 1 -> w_sample 1
    got = OnlineErrorLoss()(unc, seg, target)
    assert got.dtype == torch.float64  # float32 at least; float64 inputs stay float64
    assert math.isclose(got.item(), reference_loss(unc, seg, target), rel_tol=1e-5)


def test_without_pixel_weighting_only_the_sample_weight_remains():
    torch.manual_seed(1)
    unc, seg = torch.randn(2, 1, 3, 3).double(), torch.randn(2, 1, 6, 6).double()
    target = torch.rand(2, 1, 6, 6) > 0.7
    got = OnlineErrorLoss(pixel_weighting=False)(unc, seg, target)
    assert math.isclose(got.item(), reference_loss(unc, seg, target, pixel_weighting=False), rel_tol=1e-6)
    assert not math.isclose(got.item(), OnlineErrorLoss()(unc, seg, target).item(), rel_tol=1e-3)


def test_prediction_is_logit_above_zero_and_target_forms():
    unc = torch.zeros(1, 1, 2, 2)
    seg = torch.tensor([[[[0.0, 1e-3], [-1e-3, 5.0]]]])  # y_hat = [[0, 1], [0, 1]]
    target = torch.tensor([[[0, 1], [1, 1]]])
    loss = OnlineErrorLoss(eps=0.0)
    z, w_sample = loss.error_target(seg, target[:, None].bool())
    assert z.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    # IoU = 2/3 >= 0.5 -> weight 1
    assert w_sample.tolist() == [1.0]
    values = [loss(unc, seg, t) for t in (target, target.bool(), target[:, None].float(), target[:, None].bool())]
    assert all(v.item() == values[0].item() for v in values)
    # by hand: one error pixel weighted n0/n1 = 3, three correct pixels weighted 1, BCE(0, .) = log 2
    assert math.isclose(values[0].item(), (3 + 3) * math.log(2) / 4, rel_tol=1e-6)


def test_hard_sample_weight_doubles_a_bad_sample():
    target = torch.tensor([[[[True, True], [False, False]]]])
    good = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]]])  # IoU 1, no errors
    bad = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])  # IoU 1/3 < 0.5
    _, w_good = OnlineErrorLoss().error_target(good, target)
    _, w_bad = OnlineErrorLoss(hard_sample_weight=1.5).error_target(bad, target)
    assert w_good.tolist() == [1.0] and w_bad.tolist() == [2.5]


def test_blurred_target_uses_soft_counts():
    unc = torch.randn(1, 1, 5, 5)
    seg = -torch.ones(1, 1, 5, 5)
    target = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    target[0, 0, 2, 2] = True
    loss = OnlineErrorLoss(blur_kernel_size=3, eps=0.0)
    z, _ = loss.error_target(seg, target)
    assert z.max() < 1 and z[0, 0, 2, 2] == z.max() and (z > 0).sum() == 9
    n1, n0 = z.sum(), (1 - z).sum()
    weight = 1 + z * (n0 / n1 - 1)
    # the prediction misses the target entirely: IoU 0 < 0.5, so w_sample = 2
    expected = 2 * (weight * F.binary_cross_entropy_with_logits(unc, z, reduction="none")).mean()
    torch.testing.assert_close(loss(unc, seg, target), expected)


def test_no_gradient_into_seg_logits_and_gradient_into_uncertainty():
    unc = torch.randn(2, 1, 3, 3, requires_grad=True)
    seg = torch.randn(2, 1, 6, 6, requires_grad=True)
    loss = OnlineErrorLoss()(unc, seg, torch.rand(2, 6, 6) > 0.5)
    assert torch.autograd.grad(loss, seg, allow_unused=True, retain_graph=True)[0] is None
    loss.backward()
    assert unc.grad.abs().sum() > 0


def test_warmup_returns_attached_zero():
    unc = torch.randn(1, 1, 2, 2, requires_grad=True)
    seg, target = torch.randn(1, 1, 4, 4), torch.rand(1, 4, 4) > 0.5
    loss = OnlineErrorLoss(warmup_steps=10)
    for step in (0, 9, torch.tensor(3)):
        value = loss(unc, seg, target, step=step)
        assert value.item() == 0.0 and value.requires_grad
        value.backward()
    for step in (10, None, torch.tensor(10)):
        assert loss(unc, seg, target, step=step).item() > 0


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    unc_size=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    seg_size=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    target_size=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    blur=st.sampled_from([None, 3]),
    channel_axis=st.booleans(),
)
def test_shapes_property(batch, unc_size, seg_size, target_size, blur, channel_axis):
    """Any sizes, either target layout, with or without the blur: Eq. 4-8 pixel by pixel."""
    target = torch.rand(batch, *target_size) > 0.5
    unc, seg = torch.randn(batch, 1, *unc_size).double(), torch.randn(batch, 1, *seg_size).double()
    value = OnlineErrorLoss(blur_kernel_size=blur)(unc, seg, target[:, None] if channel_axis else target)
    assert value.shape == () and torch.isfinite(value) and value >= 0
    assert math.isclose(value.item(), reference_loss(unc, seg, target[:, None], blur=blur), rel_tol=1e-6)


U, S, T = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 6, 6), torch.rand(2, 6, 6) > 0.5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 3, 3), S, T), r"`uncertainty` must have shape \(B, 1, Hu, Wu\).*got shape \(2, 3, 3\)"),
        ((torch.randn(2, 2, 3, 3), S, T), r"`uncertainty`.*1 at dim 1; got shape \(2, 2, 3, 3\)"),
        ((U, torch.randn(2, 2, 6, 6), T), r"`seg_logits`.*1 at dim 1"),
        ((U, S, torch.rand(2, 6) > 0.5), r"`target` must have shape \(B, H, W\) or \(B, 1, H, W\); got \(2, 6\)"),
        ((U, S, torch.rand(2, 2, 6, 6) > 0.5), r"`target`.*1 at dim 1"),
        ((U, S, torch.rand(3, 6, 6) > 0.5), r"batch sizes differ.*`target` has shape \(3, 1, 6, 6\)"),
    ],
)
def test_bad_input_messages(args, match):
    with pytest.raises(ValueError, match=match):
        OnlineErrorLoss()(*args)
