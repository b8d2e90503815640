"""The converters of ``uncertainty_rrsis.adapters``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncertainty_rrsis.adapters import (
    call_coarsest_first,
    call_with_keep_mask,
    foreground_logit,
    keep_mask,
    padding_mask,
)


def test_foreground_logit_matches_the_softmax_and_the_argmax():
    x = torch.randn(3, 2, 5, 7, dtype=torch.float64) * 4
    fg = foreground_logit(x)
    assert fg.shape == (3, 1, 5, 7)
    torch.testing.assert_close(torch.sigmoid(fg), x.softmax(dim=1)[:, 1:2])
    assert torch.equal(fg[:, 0] > 0, x.argmax(dim=1) == 1)


def test_foreground_logit_passes_the_rest_of_a_tuple_through():
    x, feature, extra = torch.randn(2, 2, 4, 4), torch.randn(2, 8, 4, 4), {"aux": 1}
    out = foreground_logit((x, feature, extra))
    assert isinstance(out, tuple) and len(out) == 3
    assert torch.equal(out[0], x[:, 1:2] - x[:, 0:1]) and out[1] is feature and out[2] is extra
    assert torch.equal(foreground_logit([x])[0], foreground_logit(x))


@pytest.mark.parametrize("bad", [torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4), "logits"])
def test_foreground_logit_rejects_what_is_not_two_class_logits(bad):
    with pytest.raises(ValueError, match=r"expected two-class logits of shape \(B, 2, H, W\)"):
        foreground_logit(bad)
    with pytest.raises(ValueError, match="empty sequence"):
        foreground_logit(())


def test_keep_mask_and_padding_mask_are_inverse():
    pad = torch.tensor([[False, False, True], [False, True, True]])
    keep = keep_mask(pad)
    assert keep.dtype == torch.long and keep.tolist() == [[1, 1, 0], [1, 0, 0]]
    assert torch.equal(padding_mask(keep), pad)
    assert torch.equal(padding_mask(keep.bool()), pad)
    assert keep_mask(None, torch.zeros(2, 4, 8)).tolist() == [[1] * 4] * 2


def test_mask_converters_refuse_the_wrong_convention():
    with pytest.raises(ValueError, match="bool padding mask"):
        keep_mask(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pass `text`"):
        keep_mask(None)
    with pytest.raises(ValueError, match="integer or bool keep-mask"):
        padding_mask(torch.ones(2, 3))


def test_call_adapters_map_onto_the_decoders_signature():
    class Record(nn.Module):
        def forward(self, *args):
            return args

    features = [torch.full((1, 1, 1, 1), float(i)) for i in range(4)]
    text, pad = torch.zeros(1, 3, 2), torch.tensor([[False, False, True]])
    got = call_coarsest_first(Record(), features, text, pad)
    assert [int(t) for t in got] == [3, 2, 1, 0]
    levels, text_seen, mask = call_with_keep_mask(Record(), features, text, pad)
    assert levels == features and text_seen is text and mask.tolist() == [[1, 1, 0]]
