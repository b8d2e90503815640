"""ReferringUncertaintyScorer (RUS), Eq. 3: shapes, numerics, init, gradients, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uncertainty_rrsis import ReferringUncertaintyScorer


@torch.no_grad()
def reference_rus(rus: ReferringUncertaintyScorer, visual, text, pad):
    """Eq. 3 written position by position, token by token."""
    b, c, h, w = visual.shape
    out = torch.zeros(b, 1, h, w, dtype=visual.dtype)
    wv, bv = rus.visual_proj.weight, rus.visual_proj.bias
    wt, bt = rus.text_proj.weight, rus.text_proj.bias
    for i in range(b):
        t_proj = [wt @ text[i, j] + bt for j in range(text.shape[1])]
        for y in range(h):
            for x in range(w):
                v = visual[i, :, y, x]
                vp = wv @ v + bv
                scores = [rus.gamma.detach() * torch.dot(vp, tp) for tp in t_proj]
                keep = [not bool(pad[i, j]) for j in range(text.shape[1])]
                if any(keep):
                    m = max(s for s, k in zip(scores, keep) if k)
                    e = [math.exp(float(s - m)) if k else 0.0 for s, k in zip(scores, keep)]
                    z = sum(e)
                    attended = sum(ej / z * tp for ej, tp in zip(e, t_proj))
                else:
                    attended = torch.zeros(c, dtype=visual.dtype)
                out[i, 0, y, x] = rus.mlp(torch.cat([v, attended]))[0]
    return out


def test_matches_hand_written_equation():
    torch.manual_seed(0)
    rus = ReferringUncertaintyScorer(8, text_dim=6, hidden_dim=5).double()
    with torch.no_grad():  # move away from the identity init so every weight matters
        for p in rus.parameters():
            p.add_(0.3 * torch.randn_like(p))
    visual, text = torch.randn(2, 8, 3, 2).double(), torch.randn(2, 4, 6).double()
    pad = torch.tensor([[False, True, False, True], [True, True, True, True]])
    got = rus(visual, text, pad)
    torch.testing.assert_close(got, reference_rus(rus, visual, text, pad))


def test_init_identity_projections_and_gamma():
    rus = ReferringUncertaintyScorer(16)
    assert rus.dim == rus.text_dim == rus.hidden_dim == 16
    assert isinstance(rus.dim, int)
    torch.testing.assert_close(rus.visual_proj.weight, torch.eye(16))
    torch.testing.assert_close(rus.text_proj.weight, torch.eye(16))
    assert rus.gamma.shape == () and math.isclose(rus.gamma.item(), 1 / 4)


def test_all_padding_row_gives_zero_text_not_nan():
    rus = ReferringUncertaintyScorer(8)
    visual, text = torch.randn(2, 8, 2, 2), torch.randn(2, 3, 8)
    pad = torch.tensor([[True, True, True], [False, True, True]])
    out = rus(visual, text, pad)
    assert torch.isfinite(out).all()
    # with all text padded, the score equals the MLP of [V ; 0]
    v = visual[0].flatten(1).T
    expected = rus.mlp(torch.cat([v, torch.zeros_like(v)], dim=-1)).reshape(2, 2)
    torch.testing.assert_close(out[0, 0], expected)


def test_padded_tokens_have_no_influence():
    torch.manual_seed(1)
    rus = ReferringUncertaintyScorer(8)
    visual, text = torch.randn(1, 8, 3, 3), torch.randn(1, 5, 8)
    pad = torch.tensor([[False, False, True, True, True]])
    changed = text.clone()
    changed[:, 2:] = 1e3 * torch.randn(1, 3, 8)
    torch.testing.assert_close(rus(visual, text, pad), rus(visual, changed, pad))
    torch.testing.assert_close(rus(visual, text, pad), rus(visual[:, :, :, :], text[:, :2]))


def test_positions_are_scored_independently():
    torch.manual_seed(2)
    rus = ReferringUncertaintyScorer(8)
    visual, text = torch.randn(1, 8, 4, 4), torch.randn(1, 3, 8)
    base = rus(visual, text)
    perturbed = visual.clone()
    perturbed[:, :, 0, 0] += 5.0
    diff = (rus(perturbed, text) - base).abs()[0, 0]
    assert diff[0, 0] > 0
    diff[0, 0] = 0
    assert diff.max() == 0


def test_gradients_reach_every_parameter():
    rus = ReferringUncertaintyScorer(8, text_dim=12)
    visual = torch.randn(2, 8, 3, 3, requires_grad=True)
    text = torch.randn(2, 4, 12, requires_grad=True)
    rus(visual, text, torch.tensor([[False] * 4, [False, False, True, True]])).square().sum().backward()
    for name, p in rus.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert visual.grad.abs().sum() > 0 and text.grad.abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    dim=st.sampled_from([1, 4, 8, 24]),
    text_dim=st.sampled_from([None, 3, 16]),
    length=st.integers(1, 7),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    data=st.data(),
)
def test_shapes_property(batch, dim, text_dim, length, height, width, data):
    """Any sizes and padding: Eq. 3 position by position for sample 0, and every sample alone
    equals its row of the batch."""
    rus = ReferringUncertaintyScorer(dim, text_dim=text_dim, hidden_dim=data.draw(st.sampled_from([None, 3])))
    pad = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=length, max_size=length),
                                          min_size=batch, max_size=batch)))
    visual, text = torch.randn(batch, dim, height, width), torch.randn(batch, length, text_dim or dim)
    out = rus(visual, text, pad)
    assert out.shape == (batch, 1, height, width)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], reference_rus(rus, visual[:1], text[:1], pad[:1]), rtol=1e-4, atol=1e-5)
    for i in range(1, batch):
        alone = rus(visual[i : i + 1], text[i : i + 1], pad[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 8, 4), torch.randn(2, 3, 8), None),
         r"`visual` must have shape \(B, C, H, W\).*got shape \(2, 8, 4\)"),
        ((torch.randn(2, 6, 4, 4), torch.randn(2, 3, 8), None),
         r"`visual` must have shape.*8 at dim 1; got shape \(2, 6, 4, 4\)"),
        ((torch.randn(2, 8, 4, 4), torch.randn(2, 3), None), r"`text` must have shape \(B, L, D\)"),
        ((torch.randn(2, 8, 4, 4), torch.randn(2, 3, 5), None),
         r"`text` must have shape.*8 at dim 2; got shape \(2, 3, 5\)"),
        ((torch.randn(2, 8, 4, 4), torch.randn(3, 3, 8), None), r"batch sizes differ.*\(2, 8, 4, 4\).*\(3, 3, 8\)"),
        ((torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8), torch.ones(2, 3)),
         r"must be a bool tensor.*float32.*attention_mask == 0"),
        ((torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8), torch.zeros(2, 4, dtype=torch.bool)),
         r"\(B, L\) = \(2, 3\).*got shape \(2, 4\)"),
        ((torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8), torch.zeros(2, dtype=torch.bool)),
         r"`text_padding_mask` must have shape \(B, L\)"),
    ],
)
def test_bad_input_messages(args, match):
    with pytest.raises(ValueError, match=match):
        ReferringUncertaintyScorer(8)(*args)
