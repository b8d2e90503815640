"""Options beyond the paper, off by default: RUS on a finer level, UDLR's mask from the margin."""

from __future__ import annotations

import pytest
import torch

from uncertainty_rrsis import RiskGuidedDecoder, UncertaintyDrivenRefinement
from uncertainty_rrsis._ops import gaussian_blur, gaussian_taps

from helpers.decoders import ToyPairDecoder, field_inputs, wrap_field_decoder


def test_score_level_moves_rus_to_a_finer_level():
    torch.manual_seed(0)
    model = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4, score_level=1)
    seen = {}
    model.scorer.register_forward_pre_hook(lambda m, args: seen.update(visual=args[0]))
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 16, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32)]
    out = model(features, torch.randn(2, 5, 16, generator=g))
    assert seen["visual"] is features[1]
    assert out.uncertainty.shape == (2, 1, 8, 8)  # stride 8 instead of 2 x 2 at stride 32
    default = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4)
    assert default.score_level == -1 and default(features, torch.randn(2, 5, 16)).uncertainty.shape == (2, 1, 2, 2)


def test_score_level_with_per_level_widths_builds_rus_at_that_width():
    model = wrap_field_decoder("lavt", score_level=2)
    assert model.scorer.dim == 32 and model.score_level == 2
    out = model(*field_inputs()[:3])
    assert out.uncertainty.shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="score_level index 7 is outside the 4 levels"):
        wrap_field_decoder("lavt", score_level=7)


def test_mask_from_the_margin_and_from_both():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 1, 4, 4, generator=g)
    coarse = torch.randn(2, 1, 16, 16, generator=g) * 3
    taps = gaussian_taps(3)

    def expected(score):
        return torch.sigmoid((gaussian_blur(score, taps) - 0.5) / 0.1)

    u_p = torch.sigmoid(torch.nn.functional.interpolate(u, size=(16, 16), mode="bilinear", align_corners=False))
    margin = 1 - (2 * torch.sigmoid(coarse) - 1).abs()
    for source, score in (("uncertainty", u_p), ("margin", margin), ("max", torch.maximum(u_p, margin))):
        udlr = UncertaintyDrivenRefinement(8, mask_source=source)
        torch.testing.assert_close(udlr.soft_mask(u, (16, 16), coarse), expected(score), rtol=1e-5, atol=1e-6)
        _, mask = udlr.refine(torch.randn(2, 8, 16, 16, generator=g), coarse, u)
        torch.testing.assert_close(mask, expected(score), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reads the margin of the coarse logits"):
        UncertaintyDrivenRefinement(8, mask_source="margin").soft_mask(u, (16, 16))
    with pytest.raises(ValueError, match="mask_source must be one of"):
        UncertaintyDrivenRefinement(8, mask_source="entropy")


def test_the_model_config_reaches_the_modules(tiny_config):
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import CroBIMU, CroBIMUConfig

    config = tiny_config.replace(score_level=2, refine_tau=0.4, refine_temperature=0.2, refine_blur_kernel_size=None,
                                 refine_mask_source="max", fusion_dropout=0.1)
    assert CroBIMUConfig.from_json(config.to_json()) == config
    wrapper = CroBIMU(config).decoder
    assert wrapper.score_level == 2
    udlr = wrapper.refinement
    assert (udlr.tau, udlr.temperature, udlr.blur_kernel_size, udlr.mask_source) == (0.4, 0.2, None, "max")
    assert wrapper.fusion.dropout.p == 0.1
    with pytest.raises(ValueError, match="refine_mask_source"):
        tiny_config.replace(refine_mask_source="entropy")


def test_refine_at_input_runs_udlr_at_the_output_size():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 16, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32)]
    text = torch.randn(2, 5, 16, generator=g)
    model = RiskGuidedDecoder(ToyPairDecoder(16), 16, num_heads=4, refine_at="input", use_fusion=False)
    with torch.no_grad():
        model.refinement.head[-1].weight.normal_()
    out = model(features, text, output_size=(64, 64))
    assert out.coarse_logits.shape == (2, 1, 16, 16)
    assert out.logits.shape == out.refine_mask.shape == (2, 1, 64, 64)
    up = torch.nn.functional.interpolate(out.coarse_logits, size=(64, 64), mode="bilinear", align_corners=False)
    expected, _ = model.refinement.refine(model.decoder(features, text)[1], up, out.uncertainty)
    torch.testing.assert_close(out.logits, expected)
    with pytest.raises(ValueError, match="pass output_size"):
        model(features, text)
    with pytest.raises(ValueError, match="refine_at must be"):
        RiskGuidedDecoder(ToyPairDecoder(16), 16, refine_at="full")


def test_reference_model_refines_at_the_input_size(tiny_config, tiny_batch):
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(0)
    model = CroBIMU(tiny_config.replace(refine_at="input")).eval()
    ids, mask = tiny_batch
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), ids, mask)
    assert out.refine_mask.shape == (2, 1, 64, 64) and out.logits.shape == (2, 1, 64, 64)
    assert torch.equal(out.logits, out.coarse_logits)  # UDLR is the identity at init, at any size
