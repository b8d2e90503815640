"""RiskGuidedDecoder around decoders shaped like the field's, taken as they are.

Two decoders (see ``helpers.decoders``):

* LAVT-shaped: ``forward(x_c4, x_c3, x_c2, x_c1)``, four positional maps coarsest first at
  widths C, C/2, C/4, C/8, no text, BatchNorm, two-class logits. Wrapped with per-level widths,
  ``call=call_coarsest_first``, ``unpack=foreground_logit``, UGF on the levels before the decoder
  (one UGF per width) and ``F`` from a hook.
* CARIS-shaped: a list of multi-width maps, its own 1x1 ``input_convs`` (coarsest first) to an
  internal width, text with a Hugging Face keep-mask, foreground logits only. Wrapped with
  ``call=call_with_keep_mask`` and UGF inside the decoder on the ``input_convs`` outputs
  (``fuse_at``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss, UncertaintyGatedFusion
from uncertainty_rrsis.adapters import call_coarsest_first, call_with_keep_mask, foreground_logit, keep_mask

from helpers.decoders import FIELD_TEXT_DIM as TEXT_DIM
from helpers.decoders import FIELD_WIDTHS as WIDTHS
from helpers.decoders import FUSE_AT, HEADS, INNER, B, CARISShapedDecoder, LAVTShapedDecoder
from helpers.decoders import field_inputs as inputs
from helpers.decoders import wrap_field_decoder as build


def bare(kind: str, decoder: nn.Module, features, text, pad) -> torch.Tensor:
    """The decoder called the way its own repository calls it, as a foreground logit."""
    if kind == "lavt":
        return foreground_logit(decoder(*reversed(features)))
    return decoder(features, text, (~pad).long())


def channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map with unit weight and zero bias (UGF at step 0)."""
    y = rearrange(x, "b c h w -> b h w c")
    return rearrange(F.layer_norm(y, y.shape[-1:]), "b h w c -> b c h w")


def bare_reading_layer_norm(kind: str, decoder: nn.Module, features, text, pad) -> torch.Tensor:
    """The bare decoder, made to read LN(V) at the places the wrapper fuses."""
    if kind == "lavt":
        return bare(kind, decoder, [features[0], *(channel_layer_norm(f) for f in features[1:])], text, pad)
    handles = [decoder.get_submodule(n).register_forward_hook(lambda m, a, o: channel_layer_norm(o)) for n in FUSE_AT]
    try:
        return bare(kind, decoder, features, text, pad)
    finally:
        for h in handles:
            h.remove()


KINDS = ["lavt", "caris"]


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------


def test_per_level_widths_give_one_ugf_per_width_and_rus_at_the_coarsest():
    model = build("lavt")
    assert model.scorer.dim == 64 and model.scorer.text_dim == TEXT_DIM
    assert isinstance(model.fusion, nn.ModuleList)
    assert [ugf.dim for ugf in model.fusion] == [16, 32, 64]
    assert model.refinement.feature_dim == 32


def test_equal_fused_widths_share_one_ugf():
    torch.manual_seed(0)
    model = RiskGuidedDecoder(nn.Identity(), (8, 16, 16, 16), text_dim=TEXT_DIM, num_heads=HEADS,
                              use_refinement=False)
    assert isinstance(model.fusion, UncertaintyGatedFusion) and model.fusion.dim == 16


def test_fuse_at_uses_one_shared_ugf_at_the_fusion_width():
    model = build("caris")
    assert isinstance(model.fusion, UncertaintyGatedFusion) and model.fusion.dim == INNER
    assert model.fused_levels == () and model.fuse_at == FUSE_AT
    assert model.scorer.dim == 64 and model.mask_feature_dim == INNER


# --------------------------------------------------------------------------------------------
# property 1: at initialisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_without_fusion_the_wrapped_model_returns_the_bare_decoders_logits(kind):
    model = build(kind, use_fusion=False).eval()
    features, text, pad, _ = inputs()
    with torch.no_grad():
        out = model(features, text, pad)
        expected = bare(kind, model.decoder, features, text, pad)
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)
    assert torch.equal(out.logits, out.coarse_logits)  # UDLR is the identity at init
    assert out.uncertainty.shape == (B, 1, 2, 2) and out.refine_mask.shape == (B, 1, 16, 16)


@pytest.mark.parametrize("kind", KINDS)
def test_with_fusion_the_decoder_reads_layer_norm_of_v_at_the_fused_places_only(kind):
    model = build(kind).eval()
    features, text, pad, _ = inputs()
    with torch.no_grad():
        out = model(features, text, pad)
        expected = bare_reading_layer_norm(kind, model.decoder, features, text, pad)
        plain = bare(kind, model.decoder, features, text, pad)
    torch.testing.assert_close(out.coarse_logits, expected, rtol=0, atol=1e-6)
    assert torch.equal(out.logits, out.coarse_logits)
    assert (out.coarse_logits - plain).abs().max() > 1e-3  # the LN is a real change at step 0


@pytest.mark.parametrize("kind", KINDS)
def test_fusion_without_norm_is_the_identity_at_init(kind):
    model = build(kind, fusion_kwargs={"norm": False}).eval()
    features, text, pad, _ = inputs()
    with torch.no_grad():
        out = model(features, text, pad)
        expected = bare(kind, model.decoder, features, text, pad)
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# property 2: the Base row
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_base_row_adds_nothing_and_returns_the_bare_output_exactly(kind):
    model = build(kind, use_fusion=False, use_refinement=False)
    assert model.scorer is None and model.fusion is None and model.refinement is None
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.decoder.parameters())
    features, text, pad, _ = inputs()
    out = model(features, text, pad)
    expected = bare(kind, model.decoder, features, text, pad)
    assert torch.equal(out.logits, expected) and torch.equal(out.coarse_logits, expected)
    assert out.uncertainty is None and out.refine_mask is None


# --------------------------------------------------------------------------------------------
# property 3: training reaches every parameter, and UGF starts to act
# --------------------------------------------------------------------------------------------


def _reads(kind: str, model: RiskGuidedDecoder, features, text, pad) -> list[torch.Tensor]:
    """What the decoder reads at the fused places during one wrapped forward."""
    seen: list[torch.Tensor] = []
    if kind == "lavt":
        handle = model.decoder.register_forward_pre_hook(lambda m, args: seen.extend(a.detach() for a in args[:3]))
        handles = [handle]
    else:  # registered after the wrapper's hooks, so they see the fused outputs
        handles = [model.decoder.get_submodule(n).register_forward_hook(lambda m, a, o: seen.append(o.detach()))
                   for n in FUSE_AT]
    try:
        model(features, text, pad)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_reaches_every_parameter_and_changes_what_the_decoder_reads(kind):
    model = build(kind)
    features, text, pad, target = inputs()
    criterion = RiskGuidedLoss(lambda_unc=1.0, lambda_ref=1.0)
    before = _reads(kind, model, features, text, pad)

    criterion(model(features, text, pad), target, step=0).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    optimizer.step()
    optimizer.zero_grad()

    after = _reads(kind, model, features, text, pad)
    assert len(after) == len(before) == 3
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(after, before))

    # after the step the zero-initialised branches are live: every parameter gets a non-zero gradient
    criterion(model(features, text, pad), target, step=1).total.backward()
    zero = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not zero, zero


# --------------------------------------------------------------------------------------------
# the hooks act only inside the wrapper
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_on_its_own_is_unchanged_after_wrapping(kind):
    features, text, pad, _ = inputs()
    torch.manual_seed(0)
    model = build(kind).eval()
    with torch.no_grad():
        before = bare(kind, model.decoder, features, text, pad)
        for ugf in (model.fusion if isinstance(model.fusion, nn.ModuleList) else [model.fusion]):
            ugf.out_proj.weight.normal_()  # UGF now changes what the decoder reads inside the wrapper
        wrapped = model(features, text, pad)
        after = bare(kind, model.decoder, features, text, pad)
    assert torch.equal(after, before)
    assert (wrapped.coarse_logits - before).abs().max() > 1e-3
    assert model._captured == [] and model._context is None


def test_hooks_are_inactive_after_the_decoder_raised():
    model = build("caris")
    features, text, pad, _ = inputs()
    keep = (~pad).long()
    with torch.no_grad():
        model.fusion.out_proj.weight.normal_()
        expected = model.decoder(features, text, keep)

    def fail(module, args, output):
        raise RuntimeError("boom inside the decoder")

    handle = model.decoder.mask_features.register_forward_hook(fail)  # after UGF's hooks have fired
    with pytest.raises(RuntimeError, match="boom"):
        model(features, text, pad)
    handle.remove()
    assert model._context is None
    with torch.no_grad():
        assert torch.equal(model.decoder(features, text, keep), expected)


# --------------------------------------------------------------------------------------------
# property 4: compile and export
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_plain_path_compiles_fullgraph_and_exports():
    model = build("lavt").eval()
    features, text, pad, _ = inputs()
    with torch.no_grad():
        eager = model(features, text, pad)
        compiled = torch.compile(model, backend="eager", fullgraph=True)(features, text, pad)
        program = torch.export.export(model, (features, text, pad), strict=False)
        exported = program.module()(*inputs(1)[:3])
        eager_1 = model(*inputs(1)[:3])
    for got, want in ((compiled, eager), (exported, eager_1)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_hook_path_compiles_without_graph_breaks_and_exports():
    model = build("caris").eval()
    features, text, pad, _ = inputs()
    explanation = torch._dynamo.explain(model)(features, text, pad)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model(features, text, pad)
        compiled = torch.compile(model, backend="eager", fullgraph=True)(features, text, pad)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert model._context is None  # the hooks are off again after the compiled call
    program = torch.export.export(model, (features, text, pad), strict=False)
    new = inputs(1)[:3]
    with torch.no_grad():
        for a, b in zip(program.module()(*new), model(*new)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_a_level_of_the_wrong_width_names_the_level_and_both_widths():
    features, text, pad, _ = inputs()
    features[2] = features[2][:, :16]
    with pytest.raises(ValueError, match=r"`features\[2\]` must have 32 channels \(dim\[2\] = 32\); got 16"):
        build("lavt")(features, text, pad)


def test_wrong_number_of_levels():
    features, text, pad, _ = inputs()
    with pytest.raises(ValueError, match=r"got 3 feature levels but dim=\(8, 16, 32, 64\) gives 4 widths"):
        build("lavt")(features[1:], text, pad)


def test_unknown_fuse_at_name_lists_nearby_names():
    with pytest.raises(ValueError, match=r"fuse_at='input_conv.1' names no submodule.*'input_convs.1'"):
        build("caris", fuse_at=("input_conv.1",))


def test_fuse_at_and_fused_levels_together_is_an_error():
    with pytest.raises(ValueError, match=r"either fused_levels=\(1, 2\).*or fuse_at="):
        build("caris", fused_levels=(1, 2))


def test_per_level_widths_need_text_dim_and_fuse_at_needs_fusion_dim():
    with pytest.raises(ValueError, match=r"pass text_dim"):
        RiskGuidedDecoder(LAVTShapedDecoder(64), WIDTHS)
    with pytest.raises(ValueError, match=r"needs fusion_dim"):
        RiskGuidedDecoder(CARISShapedDecoder(WIDTHS, INNER, TEXT_DIM), WIDTHS, text_dim=TEXT_DIM, fuse_at=FUSE_AT)


def test_two_class_output_without_unpack_points_to_foreground_logit():
    features, text, pad, _ = inputs()
    with pytest.raises(ValueError, match=r"unpack=uncertainty_rrsis.adapters.foreground_logit"):
        build("lavt", unpack=None)(features, text, pad)


def test_mask_feature_of_the_wrong_width_says_which_width_to_pass():
    features, text, pad, _ = inputs()
    with pytest.raises(ValueError, match=r"mask feature F.*Pass mask_feature_dim=32"):
        build("lavt", mask_feature_dim=64)(features, text, pad)


def test_fuse_at_output_of_the_wrong_width_says_which_width_to_pass():
    features, text, pad, _ = inputs()
    torch.manual_seed(0)
    decoder = CARISShapedDecoder(WIDTHS, INNER, TEXT_DIM)
    model = RiskGuidedDecoder(decoder, WIDTHS, text_dim=TEXT_DIM, num_heads=HEADS, call=call_with_keep_mask,
                              fuse_at=("input_convs.0",), fusion_dim=32, mask_feature_from="mask_features",
                              mask_feature_dim=INNER)
    with pytest.raises(ValueError, match=r"output of decoder.input_convs.0.*Pass fusion_dim=16"):
        model(features, text, pad)


# --------------------------------------------------------------------------------------------
# the old contract still holds: an int dim, the default call and unpack
# --------------------------------------------------------------------------------------------


def test_custom_unpack_can_supply_the_mask_feature():
    features, text, pad, _ = inputs()
    torch.manual_seed(0)
    decoder = LAVTShapedDecoder(64)
    captured = {}
    decoder.stage1.register_forward_hook(lambda m, a, o: captured.__setitem__("f", o))

    def unpack(raw):
        return foreground_logit(raw), captured["f"]

    model = RiskGuidedDecoder(decoder, WIDTHS, text_dim=TEXT_DIM, num_heads=HEADS, call=call_coarsest_first,
                              unpack=unpack, mask_feature_dim=32)
    with torch.no_grad():
        model.refinement.head[-1].weight.normal_()  # UDLR acts: its output depends on F
    out = model(features, text, pad)
    assert out.refine_mask.shape == (B, 1, 16, 16)
    expected = model.refinement(captured["f"], out.coarse_logits, out.uncertainty)
    torch.testing.assert_close(out.logits, expected)
    assert (out.logits - out.coarse_logits).abs().max() > 1e-3


def test_keep_mask_call_passes_the_hugging_face_convention():
    seen = {}

    class Spy(nn.Module):
        def forward(self, features, text, attention_mask):
            seen["mask"] = attention_mask
            return features[0][:, :1]

    features, text, pad, _ = inputs()
    model = RiskGuidedDecoder(Spy(), WIDTHS, text_dim=TEXT_DIM, call=call_with_keep_mask, use_fusion=False,
                              use_refinement=False)
    model(features, text, pad)
    assert seen["mask"].dtype == torch.long and torch.equal(seen["mask"], keep_mask(pad))
    assert seen["mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
