"""UncertaintyDrivenRefinement (UDLR), Eq. 13-16: shapes, numerics, init, gradients, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from uncertainty_rrsis import UncertaintyDrivenRefinement

from helpers.reference import gaussian_blur_by_hand


def blur3(x):
    """Gaussian 3x3 blur (sigma 0.8) with replicate padding, by hand."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    side = math.exp(-1 / (2 * 0.8**2))
    taps = [side / (1 + 2 * side), 1 / (1 + 2 * side), side / (1 + 2 * side)]
    for dy in range(3):
        for dx in range(3):
            out = out + taps[dy] * taps[dx] * p[..., dy : dy + h, dx : dx + w]
    return out


def perturb_(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@torch.no_grad()
def reference_udlr(udlr, feat, coarse, unc):
    """Eq. 13-16 with plain torch ops (bilinear resizes, blur, soft mask, the head R)."""
    size = coarse.shape[-2:]
    up = torch.sigmoid(F.interpolate(unc, size=size, mode="bilinear", align_corners=False))
    blurred = gaussian_blur_by_hand(up, udlr.blur_kernel_size) if udlr.blur_kernel_size else up
    m = torch.sigmoid((blurred - udlr.tau) / udlr.temperature)
    f = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
    return coarse + m * udlr.head(torch.cat([f, coarse, up], 1))


@pytest.mark.parametrize("blur", [3, None])
def test_matches_hand_written_equation(blur):
    torch.manual_seed(0)
    udlr = UncertaintyDrivenRefinement(4, hidden_dim=5, tau=0.4, temperature=0.2, blur_kernel_size=blur).double()
    perturb_(udlr)
    feat = torch.randn(2, 4, 3, 5).double()
    coarse = torch.randn(2, 1, 6, 10).double()
    unc = 2 * torch.randn(2, 1, 2, 3).double()
    up = torch.sigmoid(F.interpolate(unc, size=(6, 10), mode="bilinear", align_corners=False))
    blurred = blur3(up) if blur else up
    m = torch.sigmoid((blurred - 0.4) / 0.2)
    f = F.interpolate(feat, size=(6, 10), mode="bilinear", align_corners=False)
    conv1, conv2, conv3 = udlr.head[0], udlr.head[2], udlr.head[4]
    x = torch.cat([f, coarse, up], 1)
    x = F.relu(F.conv2d(x, conv1.weight, conv1.bias, padding=1))
    x = F.relu(F.conv2d(x, conv2.weight, conv2.bias, padding=1))
    delta = F.conv2d(x, conv3.weight, conv3.bias)
    torch.testing.assert_close(udlr(feat, coarse, unc), coarse + m * delta)
    torch.testing.assert_close(udlr.soft_mask(unc, (6, 10)), m)


def test_init_returns_input_exactly():
    udlr = UncertaintyDrivenRefinement(8)
    assert udlr.feature_dim == 8 and udlr.hidden_dim == 64 and udlr.blur_kernel_size == 3
    coarse = torch.randn(2, 1, 7, 9)
    out = udlr(torch.randn(2, 8, 4, 5), coarse, torch.randn(2, 1, 3, 3))
    assert torch.equal(out, coarse)
    assert torch.count_nonzero(udlr.head[-1].weight) == 0 and torch.count_nonzero(udlr.head[-1].bias) == 0


def test_no_gradient_through_the_soft_mask():
    udlr = UncertaintyDrivenRefinement(4, hidden_dim=4)
    unc = torch.randn(1, 1, 3, 3, requires_grad=True)
    mask = udlr.soft_mask(unc, (6, 6))
    assert not mask.requires_grad and mask.grad_fn is None
    assert ((mask > 0) & (mask < 1)).all()
    # the gradient into U comes only from the U^p input of R: zero out that input channel
    perturb_(udlr)
    with torch.no_grad():
        udlr.head[0].weight[:, -1].zero_()
    udlr(torch.randn(1, 4, 6, 6), torch.randn(1, 1, 6, 6), unc).sum().backward()
    assert unc.grad is None or torch.count_nonzero(unc.grad) == 0


def test_gradients_reach_every_parameter_and_inputs():
    torch.manual_seed(5)
    udlr = UncertaintyDrivenRefinement(4, hidden_dim=6, blur_kernel_size=5)
    perturb_(udlr)
    feat = torch.randn(2, 4, 5, 5, requires_grad=True)
    coarse = torch.randn(2, 1, 10, 10, requires_grad=True)
    unc = torch.zeros(2, 1, 5, 5, requires_grad=True)  # U^p = 0.5 = tau: M = 0.5, not saturated
    udlr(feat, coarse, unc).square().sum().backward()
    for name, p in udlr.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for t in (feat, coarse, unc):
        assert t.grad.abs().sum() > 0


def test_high_uncertainty_refines_low_uncertainty_keeps():
    udlr = UncertaintyDrivenRefinement(4, hidden_dim=4, blur_kernel_size=None)
    perturb_(udlr)
    coarse = torch.zeros(1, 1, 4, 4)
    unc = torch.full((1, 1, 4, 4), -20.0)
    unc[..., :2] = 20.0
    m = udlr.soft_mask(unc, (4, 4))
    # M = sigmoid((U^p - tau) / t): sigmoid(5) where sure of an error, sigmoid(-5) where sure of none
    torch.testing.assert_close(m[..., :2], torch.full((1, 1, 4, 2), torch.sigmoid(torch.tensor(5.0)).item()))
    torch.testing.assert_close(m[..., 2:], torch.full((1, 1, 4, 2), torch.sigmoid(torch.tensor(-5.0)).item()))
    out, mask = udlr.refine(torch.randn(1, 4, 4, 4), coarse, unc)
    assert torch.equal(mask, m) and out[..., :2].abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    feature_dim=st.sampled_from([1, 3, 8]),
    size=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    feat_size=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    unc_size=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    blur=st.sampled_from([None, 1, 3, 5]),
)
def test_shapes_property(batch, feature_dim, size, feat_size, unc_size, blur):
    """Any sizes: identity at init, then (perturbed) the equations written with plain torch ops."""
    udlr = UncertaintyDrivenRefinement(feature_dim, hidden_dim=4, blur_kernel_size=blur)
    feat, coarse = torch.randn(batch, feature_dim, *feat_size), torch.randn(batch, 1, *size)
    unc = 2 * torch.randn(batch, 1, *unc_size)
    assert torch.equal(udlr(feat, coarse, unc), coarse)  # the last conv of R starts at zero
    perturb_(udlr)
    out = udlr(feat, coarse, unc)
    assert out.shape == (batch, 1, *size)
    torch.testing.assert_close(out, reference_udlr(udlr, feat, coarse, unc), rtol=1e-4, atol=1e-5)
    mask = udlr.soft_mask(unc, size)
    assert mask.shape == (batch, 1, *size) and ((mask > 0) & (mask < 1)).all()


def test_constructor_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        UncertaintyDrivenRefinement(4, temperature=0.0)
    with pytest.raises(ValueError, match="positive odd int; got 4"):
        UncertaintyDrivenRefinement(4, blur_kernel_size=4)


F4, C, U = torch.randn(2, 4, 3, 3), torch.randn(2, 1, 6, 6), torch.randn(2, 1, 2, 2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 5, 3, 3), C, U), r"`mask_feature`.*4 at dim 1; got shape \(2, 5, 3, 3\).*feature_dim=5"),
        ((F4, torch.randn(2, 2, 6, 6), U), r"`coarse_logits`.*1 at dim 1; got shape \(2, 2, 6, 6\)"),
        ((F4, torch.randn(2, 6, 6), U), r"`coarse_logits` must have shape \(B, 1, H, W\).*got shape \(2, 6, 6\)"),
        ((F4, C, torch.randn(2, 3, 2, 2)), r"`uncertainty`.*1 at dim 1"),
        ((F4[:1], C, U), r"batch sizes differ.*`mask_feature` has shape \(1, 4, 3, 3\)"),
    ],
)
def test_bad_input_messages(args, match):
    with pytest.raises(ValueError, match=match):
        UncertaintyDrivenRefinement(4)(*args)


def test_the_split_first_convolution_equals_the_convolution_of_the_concatenation():
    torch.manual_seed(0)
    udlr = UncertaintyDrivenRefinement(12, hidden_dim=8).double()
    with torch.no_grad():
        udlr.head[-1].weight.normal_()
    feature, coarse, prob = (torch.randn(2, c, 9, 7, dtype=torch.float64) for c in (12, 1, 1))
    expected = udlr.head(torch.cat([feature, coarse, prob], dim=1))
    torch.testing.assert_close(udlr._head(feature, coarse, prob), expected, rtol=1e-12, atol=1e-12)
