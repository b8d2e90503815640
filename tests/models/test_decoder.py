"""The reference decoder: cross-modal pixel decoder + text-conditioned mask head (MaskDecoder)."""

from __future__ import annotations

import math

import pytest
import torch

from uncertainty_rrsis.models.attention import MultiHeadAttention, sine_position_encoding
from uncertainty_rrsis.models.decoder import MaskDecoder
from uncertainty_rrsis.models.mask_head import TextConditionedMaskHead

DIM = 32
# Level sizes (strides 4, 8, 16, 32): 64 px, 96 px, odd/non-square, 120 px (15 -> 8 -> 4).
SIZES = {
    "64px": [(16, 16), (8, 8), (4, 4), (2, 2)],
    "96px": [(24, 24), (12, 12), (6, 6), (3, 3)],
    "odd": [(28, 20), (14, 10), (7, 5), (4, 3)],
    "120px": [(30, 30), (15, 15), (8, 8), (4, 4)],
}


def tiny_decoder(**kwargs) -> MaskDecoder:
    options = dict(num_layers=1, num_heads=4, num_points=2, ffn_dim=64, num_mask_layers=2)
    options.update(kwargs)
    return MaskDecoder(DIM, **options)


def make_inputs(sizes, batch=2, tokens=6, dtype=torch.float32):
    features = [torch.randn(batch, DIM, h, w, dtype=dtype) for h, w in sizes]
    text = torch.randn(batch, tokens, DIM, dtype=dtype)
    padding = torch.zeros(batch, tokens, dtype=torch.bool)
    padding[0, 4:] = True
    return features, text, padding


@pytest.mark.parametrize("name", list(SIZES))
def test_shapes(name):
    torch.manual_seed(0)
    sizes = SIZES[name]
    decoder = tiny_decoder().eval()
    features, text, padding = make_inputs(sizes)
    coarse, mask_feature = decoder(features, text, padding)
    assert coarse.shape == (2, 1, *sizes[0])
    assert mask_feature.shape == (2, DIM, *sizes[0])
    assert torch.isfinite(coarse).all() and torch.isfinite(mask_feature).all()
    # the sentence matters, for its own sample only
    changed = text.clone()
    changed[0, 1] += 1.0  # a kept token of sample 0
    coarse2, _ = decoder(features, changed, padding)
    assert (coarse2[0] - coarse[0]).abs().max() > 1e-4
    torch.testing.assert_close(coarse2[1], coarse[1])


def test_width_attributes():
    decoder = tiny_decoder()
    assert (decoder.dim, decoder.num_layers, decoder.num_heads, decoder.num_points) == (DIM, 1, 4, 2)
    assert (decoder.ffn_dim, decoder.num_mask_layers, decoder.num_inputs, decoder.num_levels) == (64, 2, 4, 3)
    assert all(isinstance(v, int) for v in (decoder.dim, decoder.num_layers, decoder.ffn_dim))


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    decoder = tiny_decoder(num_layers=2, num_mask_layers=3)
    with torch.no_grad():  # perturb the zero-initialised weights so nothing is trivially zero
        for p in decoder.parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.02)
    features, text, padding = make_inputs(SIZES["odd"])
    features = [f.requires_grad_() for f in features]
    text.requires_grad_()
    coarse, mask_feature = decoder(features, text, padding)
    loss = (coarse * torch.randn_like(coarse)).sum() + (mask_feature * torch.randn_like(mask_feature)).sum()
    loss.backward()
    missing = [n for n, p in decoder.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    for t in [*features, text]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_all_padding_text_row_gives_no_nan():
    torch.manual_seed(0)
    decoder = tiny_decoder()
    features, text, padding = make_inputs(SIZES["64px"])
    padding[1] = True  # sample 1 has no real token at all
    text.requires_grad_()
    coarse, mask_feature = decoder(features, text, padding)
    assert torch.isfinite(coarse).all() and torch.isfinite(mask_feature).all()
    (coarse.sum() + mask_feature.sum()).backward()
    assert torch.isfinite(text.grad).all()
    assert text.grad[1].abs().sum() == 0  # nothing of an all-padding sentence is used


def test_padded_tokens_are_ignored_and_samples_independent():
    torch.manual_seed(0)
    decoder = tiny_decoder().eval()
    features, text, padding = make_inputs(SIZES["odd"])
    coarse, mask_feature = decoder(features, text, padding)
    changed = text.clone()
    changed[0, 4:] = torch.randn(2, DIM) * 10
    coarse2, mask_feature2 = decoder(features, changed, padding)
    torch.testing.assert_close(coarse2, coarse)
    torch.testing.assert_close(mask_feature2, mask_feature)
    # Sample 1 alone gives the same result as inside the batch.
    alone, alone_feature = decoder([f[1:] for f in features], text[1:], padding[1:])
    torch.testing.assert_close(alone, coarse[1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone_feature, mask_feature[1:], rtol=1e-4, atol=1e-5)


def test_no_mask_equals_all_false_mask():
    torch.manual_seed(0)
    decoder = tiny_decoder().eval()
    features, text, _ = make_inputs(SIZES["64px"])
    a = decoder(features, text, None)
    b = decoder(features, text, torch.zeros(2, 6, dtype=torch.bool))
    torch.testing.assert_close(a, b)


def test_float64_construction():
    torch.manual_seed(0)
    decoder = tiny_decoder(dtype=torch.float64).eval()
    assert all(p.dtype == torch.float64 for p in decoder.parameters())
    features, text, padding = make_inputs(SIZES["odd"], dtype=torch.float64)
    coarse, mask_feature = decoder(features, text, padding)
    assert coarse.dtype == mask_feature.dtype == torch.float64
    # the same weights in float32 give the same numbers up to float32 rounding
    single = tiny_decoder().eval()
    single.load_state_dict({k: v.float() for k, v in decoder.state_dict().items()})
    coarse32, mask_feature32 = single([f.float() for f in features], text.float(), padding)
    torch.testing.assert_close(coarse32.double(), coarse, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mask_feature32.double(), mask_feature, rtol=1e-4, atol=1e-4)


# Tolerance of |bf16 autocast - float32|. bf16's unit roundoff is u = 2^-9 ~ 2e-3 (about 2.4 decimal
# digits); the decoder runs about ten bf16 matmuls in a row (input projections, deformable attention's
# value / offset / weight / output projections, cross-attention, FFN, mask head), each rounding its
# inputs, so the error is ~10 u ~ 2e-2 times the size of the values (|x| <= 3.6, std ~0.6 here).
# Measured over five seeds: at most 3.5e-2 (2.0e-2 for this seed); tolerance 0.1, 3x the worst seed.
DECODER_BF16_ATOL = 0.1


def test_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    decoder = tiny_decoder()
    features, text, padding = make_inputs(SIZES["96px"])
    padding[1] = True
    with torch.no_grad():
        expected = decoder(features, text, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse, mask_feature = decoder(features, text, padding)
        loss = coarse.float().mean() + mask_feature.float().mean()
    loss.backward()
    assert coarse.shape == (2, 1, 24, 24) and mask_feature.shape == (2, DIM, 24, 24)
    assert coarse.dtype == mask_feature.dtype == torch.bfloat16
    for got, want in zip((coarse, mask_feature), expected):
        assert torch.isfinite(got.float()).all()
        torch.testing.assert_close(got.float(), want, rtol=0, atol=DECODER_BF16_ATOL)
    assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)


def test_masked_attention_fallbacks():
    torch.manual_seed(0)
    attn = MultiHeadAttention(DIM, num_heads=4).eval()
    query, memory = torch.randn(2, 3, DIM), torch.randn(2, 5, DIM)
    keep = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    keep[0, :, 1] = False  # query 1 of sample 0 has an empty mask
    keep[1, :, :, :2] = False
    out = attn(query, memory, memory, keep=keep)
    free = attn(query, memory, memory)
    torch.testing.assert_close(out[0], free[0])  # empty row attends everywhere
    assert not torch.allclose(out[1], free[1])
    zeroed = attn(query, memory, memory, keep=keep, zero_empty_rows=True)
    assert zeroed[0, 1].abs().sum() == 0
    torch.testing.assert_close(zeroed[0, [0, 2]], out[0, [0, 2]])


def test_mask_head_attention_keep_is_detached_and_follows_the_prediction():
    logits = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]], requires_grad=True)
    keep = TextConditionedMaskHead.attention_keep(logits, (2, 2))
    assert keep.shape == (1, 1, 1, 4) and not keep.requires_grad
    assert keep.flatten().tolist() == [False, True, True, False]
    pooled = TextConditionedMaskHead.pool_text(torch.ones(2, 3, 4), torch.tensor([[False, True, True], [True] * 3]))
    torch.testing.assert_close(pooled, torch.tensor([[1.0] * 4, [0.0] * 4]))


def test_sine_position_encoding_values():
    """Row half then column half; each interleaves sin and cos of 2 pi (i + 0.5) / size at
    frequencies 10000^(-2 f / (dim / 2))."""
    height, width, dim = 7, 5, 16
    pos = sine_position_encoding(height, width, dim)
    assert pos.shape == (35, 16)
    half = dim // 2
    for y, x in [(0, 0), (3, 2), (6, 4), (2, 4)]:
        row = pos[y * width + x]
        for f in range(half // 2):
            inv_freq = 10000.0 ** (-2.0 * f / half)
            for offset, coord, size in ((0, y, height), (half, x, width)):
                angle = 2 * math.pi * (coord + 0.5) / size * inv_freq
                assert row[offset + 2 * f].item() == pytest.approx(math.sin(angle), abs=1e-6)
                assert row[offset + 2 * f + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_encoding(2, 2, 6)


def test_input_checks():
    decoder = tiny_decoder()
    features, text, padding = make_inputs(SIZES["64px"])
    with pytest.raises(ValueError, match="list of 4 maps"):
        decoder(features[:3], text, padding)
    with pytest.raises(ValueError, match="finest first"):
        decoder(features[::-1], text, padding)
    bad = [features[0][:, :16], *features[1:]]
    with pytest.raises(ValueError, match="features\\[0\\]"):
        decoder(bad, text, padding)
    with pytest.raises(ValueError, match="`text`"):
        decoder(features, text[..., :16], padding)
    with pytest.raises(ValueError, match="bool"):
        decoder(features, text, padding.long())
    with pytest.raises(ValueError, match="batch"):
        decoder(features, text[:1], padding[:1])
    with pytest.raises(ValueError, match="divisible"):
        MaskDecoder(30, num_heads=4)


def test_parameter_count_at_paper_defaults():
    decoder = MaskDecoder(device="meta")  # d=256, 6 layers, 8 heads, 4 points, ffn 1024, 3 mask layers
    total = sum(p.numel() for p in decoder.parameters())
    pixel = sum(p.numel() for p in decoder.pixel_decoder.parameters())
    head = sum(p.numel() for p in decoder.mask_head.parameters())
    print(f"MaskDecoder paper defaults: {total:,} parameters (pixel decoder {pixel:,}, mask head {head:,})")
    assert pixel + head == total
    assert total == 10_186_176


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    torch._dynamo.reset()
    decoder = tiny_decoder(num_mask_layers=1).eval()
    features, text, padding = make_inputs(SIZES["odd"])
    compiled = torch.compile(decoder, fullgraph=True)
    with torch.no_grad():
        want = decoder(features, text, padding)
        got = compiled(features, text, padding)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
