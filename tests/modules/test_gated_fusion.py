"""UncertaintyGatedFusion (UGF), Eq. 9-12: shapes, numerics, gate, init, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from uncertainty_rrsis import UncertaintyGatedFusion


def perturb_(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@torch.no_grad()
def reference_ugf(ugf: UncertaintyGatedFusion, visual, text, unc, pad):
    """Eq. 9-12 position by position with an explicit per-head softmax."""
    b, c, h, w = visual.shape
    heads, e = ugf.num_heads, ugf.head_dim
    u = F.interpolate(unc, size=(h, w), mode="bilinear", align_corners=False)
    out = torch.zeros_like(visual)
    for i in range(b):
        k = text[i] @ ugf.k_proj.weight.T  # no key bias (softmax would ignore it)
        v = text[i] @ ugf.v_proj.weight.T + ugf.v_proj.bias
        keep = ~pad[i]
        for y in range(h):
            for x in range(w):
                q = ugf.q_proj.weight @ visual[i, :, y, x] + ugf.q_proj.bias
                heads_out = []
                for g in range(heads):
                    sl = slice(g * e, (g + 1) * e)
                    if keep.any():
                        s = (k[:, sl] @ q[sl]) / e**0.5
                        s = s.masked_fill(~keep, float("-inf"))
                        heads_out.append(s.softmax(0) @ v[:, sl])
                    else:
                        heads_out.append(torch.zeros(e, dtype=visual.dtype))
                delta = ugf.out_proj.weight @ torch.cat(heads_out) + ugf.out_proj.bias
                delta = delta if keep.any() else torch.zeros_like(delta)
                gate = torch.sigmoid(ugf.alpha * u[i, 0, y, x] + ugf.beta)
                out[i, :, y, x] = ugf.norm(visual[i, :, y, x] + gate * delta)
    return out


@pytest.mark.parametrize("unc_size", [(2, 3), (5, 7), (11, 13)])
def test_matches_hand_written_equation(unc_size):
    torch.manual_seed(0)
    ugf = UncertaintyGatedFusion(8, text_dim=6, num_heads=2).double()
    perturb_(ugf)
    visual, text = torch.randn(2, 8, 5, 7).double(), torch.randn(2, 4, 6).double()
    unc = 2 * torch.randn(2, 1, *unc_size).double()
    pad = torch.tensor([[False, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(ugf(visual, text, unc, pad), reference_ugf(ugf, visual, text, unc, pad))


def test_init_is_layernorm_of_input_and_identity_without_norm():
    visual, text, unc = torch.randn(2, 16, 3, 3), torch.randn(2, 4, 16), torch.randn(2, 1, 1, 1)
    ugf = UncertaintyGatedFusion(16, num_heads=4)
    assert ugf.alpha.item() > 0 and ugf.beta.item() == 0.0
    assert ugf.dim == 16 and ugf.text_dim == 16 and ugf.num_heads == 4 and ugf.head_dim == 4
    expected = F.layer_norm(visual.permute(0, 2, 3, 1), (16,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ugf(visual, text, unc), expected)
    plain = UncertaintyGatedFusion(16, num_heads=4, norm=False)
    assert torch.equal(plain(visual, text, unc), visual)


def test_gate_is_per_position_and_grows_with_uncertainty():
    torch.manual_seed(3)
    ugf = UncertaintyGatedFusion(8, num_heads=2, norm=False)
    perturb_(ugf)
    with torch.no_grad():
        ugf.alpha.fill_(2.0)
    visual, text = torch.randn(1, 8, 1, 2), torch.randn(1, 3, 8)
    unc = torch.tensor([[[[-6.0, 6.0]]]])  # left certain, right uncertain
    gate = ugf.gate(unc, (1, 2))
    assert gate.shape == (1, 1, 1, 2) and gate[0, 0, 0, 1] > 0.99 and gate[0, 0, 0, 0] < 0.01
    delta = ugf(visual, text, unc) - visual
    # the injected language is proportional to the gate at each position
    full = UncertaintyGatedFusion(8, num_heads=2, norm=False)
    full.load_state_dict(ugf.state_dict())
    with torch.no_grad():
        full.alpha.zero_()
        full.beta.fill_(30.0)  # gate = 1 everywhere
    delta_full = full(visual, text, unc) - visual
    torch.testing.assert_close(delta, delta_full * gate)


def test_gradients_reach_every_parameter_and_uncertainty():
    torch.manual_seed(4)
    ugf = UncertaintyGatedFusion(8, text_dim=4, num_heads=2)
    perturb_(ugf)
    unc = torch.randn(2, 1, 2, 2, requires_grad=True)
    out = ugf(torch.randn(2, 8, 3, 3), torch.randn(2, 5, 4), unc, torch.zeros(2, 5, dtype=torch.bool))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in ugf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert unc.grad.abs().sum() > 0


def test_all_padding_row_is_finite_and_leaves_visual():
    ugf = UncertaintyGatedFusion(8, num_heads=2, norm=False)
    perturb_(ugf)
    visual = torch.randn(2, 8, 2, 2)
    out = ugf(visual, torch.randn(2, 3, 8), torch.randn(2, 1, 2, 2), torch.tensor([[True] * 3, [False] * 3]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], visual[0])


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads_and_dim=st.sampled_from([(1, 1), (1, 4), (2, 8), (4, 16)]),
    text_dim=st.sampled_from([None, 3]),
    length=st.integers(1, 6),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    unc_size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    data=st.data(),
)
def test_shapes_property(batch, heads_and_dim, text_dim, length, size, unc_size, data):
    """Any sizes and padding: LayerNorm of the input at init; then (perturbed) the per-position
    equations for sample 0, and every sample alone equals its row of the batch."""
    heads, dim = heads_and_dim
    ugf = UncertaintyGatedFusion(dim, text_dim=text_dim, num_heads=heads)
    pad = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=length, max_size=length),
                                          min_size=batch, max_size=batch)))
    visual, text = torch.randn(batch, dim, *size), torch.randn(batch, length, text_dim or dim)
    unc = torch.randn(batch, 1, *unc_size)
    out = ugf(visual, text, unc, pad)
    assert out.shape == (batch, dim, *size) and torch.isfinite(out).all()
    torch.testing.assert_close(out, F.layer_norm(visual.permute(0, 2, 3, 1), (dim,)).permute(0, 3, 1, 2))
    perturb_(ugf)
    out = ugf(visual, text, unc, pad)
    torch.testing.assert_close(out[:1], reference_ugf(ugf, visual[:1], text[:1], unc[:1], pad[:1]),
                               rtol=1e-4, atol=1e-5)
    for i in range(1, batch):
        alone = ugf(visual[i : i + 1], text[i : i + 1], unc[i : i + 1], pad[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], alone, rtol=1e-4, atol=1e-5)


def test_constructor_errors():
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=4"):
        UncertaintyGatedFusion(10, num_heads=4)
    with pytest.raises(ValueError, match="alpha_init must be > 0"):
        UncertaintyGatedFusion(8, num_heads=2, alpha_init=0.0)


V, T, U = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8), torch.randn(2, 1, 2, 2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((V[0], T, U, None), r"`visual` must have shape \(B, C, H, W\).*got shape \(8, 4, 4\)"),
        ((torch.randn(2, 4, 4, 4), T, U, None), r"`visual`.*8 at dim 1; got shape \(2, 4, 4, 4\)"),
        ((V, T, torch.randn(2, 2, 2, 2), None), r"`uncertainty`.*1 at dim 1; got shape \(2, 2, 2, 2\)"),
        ((V, T, torch.randn(2, 2, 2), None), r"`uncertainty` must have shape \(B, 1, Hu, Wu\)"),
        ((V, T, torch.randn(1, 1, 2, 2), None), r"batch sizes differ.*`uncertainty` has shape \(1, 1, 2, 2\)"),
        ((V, torch.randn(2, 3, 7), U, None), r"`text`.*8 at dim 2; got shape \(2, 3, 7\)"),
        ((V, T, U, torch.zeros(2, 3, dtype=torch.long)), r"bool tensor.*torch.int64"),
        ((V, T, U, torch.zeros(2, 5, dtype=torch.bool)), r"got shape \(2, 5\)"),
    ],
)
def test_bad_input_messages(args, match):
    with pytest.raises(ValueError, match=match):
        UncertaintyGatedFusion(8, num_heads=2)(*args)


def test_fusing_levels_together_equals_level_by_level():
    torch.manual_seed(6)
    ugf = UncertaintyGatedFusion(8, text_dim=4, num_heads=2, dropout=0.0)
    perturb_(ugf)
    levels = [torch.randn(2, 8, 12, 10), torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    text, unc = torch.randn(2, 5, 4), torch.randn(2, 1, 3, 3)
    pad = torch.tensor([[False, False, True, True, True], [True] * 5])
    together = ugf.fuse_levels(levels, text, unc, pad)
    for level, fused in zip(levels, together):
        torch.testing.assert_close(fused, ugf(level, text, unc, pad))
