"""The one masked attention of the library (``uncertainty_rrsis._attention``)."""

from __future__ import annotations

import math

import torch

from uncertainty_rrsis._attention import keep_from_padding, masked_attention, padding_from_keep


def reference(q, k, v, keep, scale):
    """softmax over the kept keys, written out; rows with no key attend everywhere."""
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) * scale
    keep = keep.expand_as(scores)
    empty = ~keep.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~(keep | empty), float("-inf"))
    return torch.einsum("bhqk,bhke->bhqe", scores.softmax(dim=-1), v), ~empty


def test_matches_a_written_out_softmax_with_partial_and_empty_rows():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(3, 2, 6, 4, generator=g, dtype=torch.float64)
    v = torch.randn(3, 2, 6, 4, generator=g, dtype=torch.float64)
    pad = torch.tensor([[False] * 6, [False, False, True, True, True, True], [True] * 6])
    keep = keep_from_padding(pad)[:, None, None, :]
    out, valid = masked_attention(q, k, v, keep, scale=0.7)
    expected, expected_valid = reference(q, k, v, keep, 0.7)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert valid.shape == (3, 1, 1, 1) and torch.equal(valid, expected_valid[:, :1, :1])
    assert valid[:, 0, 0, 0].tolist() == [True, True, False] and torch.isfinite(out).all()
    # padded keys get no weight: changing their values changes nothing
    v2 = v.clone()
    v2[1, :, 2:] = 1e6
    torch.testing.assert_close(masked_attention(q, k, v2, keep, scale=0.7)[0][:2], out[:2])


def test_no_mask_and_the_default_scale():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 1, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out, valid = masked_attention(q, k, v)
    assert valid is None
    expected, _ = reference(q, k, v, torch.ones(2, 1, 1, 3, dtype=torch.bool), 1 / math.sqrt(8))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_the_mask_conversions_are_inverse():
    hf = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pad = padding_from_keep(hf)
    assert pad.dtype == torch.bool and pad.tolist() == [[False, False, True], [False, True, True]]
    assert torch.equal(keep_from_padding(pad).long(), hf)
