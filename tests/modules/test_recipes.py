"""Named recipes on look-alikes of the six published decoders (``examples/field_decoders.py``).

For every recipe: the wrapper builds from one line, returns the bare decoder's output bit for bit
at step 0 in the Base row, with fusion off and with UGF at ``norm=False``, and trains one step
with finite gradients. Then the rows of the guide's table of calls (text channel-first, no text,
a tuple, two-class logits), the errors, and UGF keeping the input's memory format.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss, UncertaintyGatedFusion
from uncertainty_rrsis.adapters import call_coarsest_first, call_text_channels_first, foreground_logit
from uncertainty_rrsis.recipes import RECIPES, DecoderRecipe, get_recipe, register_recipe

from helpers.examples import load_example

fd = load_example("field_decoders")

WIDTHS, TEXT_DIM, B, L, SIZE = (8, 16, 32, 64), 24, 2, 6, 64
NAMES = list(fd.DECODERS)


def inputs(widths=WIDTHS, size=SIZE, text_dim=TEXT_DIM, seed=0):
    """Backbone levels at strides 4 / 8 / 16 / 32 (finest first), words, padding, target."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(B, c, size // s, size // s, generator=g) for c, s in zip(widths, (4, 8, 16, 32))]
    text = torch.randn(B, L, text_dim, generator=g)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[0, 4:] = True
    return features, text, pad, torch.rand(B, size, size, generator=g) > 0.7


def decoder(name, widths=WIDTHS, text_dim=TEXT_DIM):
    torch.manual_seed(0)
    return fd.build_decoder(name, widths, text_dim, small=True)


def bare(name, dec, features, text, pad):
    """The bare decoder, called as its repository calls it, as one foreground logit."""
    return foreground_logit(fd.call_as_published(name, dec, features, text, pad))


def test_the_six_published_decoders_have_a_recipe():
    assert set(NAMES) <= set(RECIPES)
    for name in NAMES:
        recipe = get_recipe(name)
        assert recipe.name == name and recipe.requires and recipe.placement and recipe.align_corners


@pytest.mark.parametrize(
    "kwargs",
    [dict(use_fusion=False, use_refinement=False), dict(use_fusion=False), dict(fusion_kwargs={"norm": False})],
    ids=["base", "no-fusion", "ugf-without-norm"],
)
@pytest.mark.parametrize("name", NAMES)
def test_at_step_0_the_wrapped_decoder_returns_the_bare_output_bit_for_bit(name, kwargs):
    dec = decoder(name).eval()
    features, text, pad, _ = inputs()
    model = RiskGuidedDecoder.from_recipe(name, dec, WIDTHS, text_dim=TEXT_DIM, num_heads=4, **kwargs).eval()
    with torch.no_grad():
        expected = bare(name, dec, features, text, pad)
        out = model(features, text, pad)
    assert torch.equal(out.logits, expected)
    assert torch.equal(out.coarse_logits, expected)


def test_bit_for_bit_also_where_a_map_in_token_layout_would_change_the_next_convolution():
    """At these widths the LAVT decoder's next convolution takes another kernel on a channels-last
    map (a difference of about 1e-7), so equality needs UGF to return the input's layout."""
    widths, size = (64, 128, 256, 512), 320
    dec = decoder("lavt", widths).eval()
    features, text, pad, _ = inputs(widths, size)
    model = RiskGuidedDecoder.from_recipe("lavt", dec, widths, text_dim=TEXT_DIM, num_heads=4,
                                          fusion_kwargs={"norm": False}).eval()
    with torch.no_grad():
        assert torch.equal(model(features, text, pad).logits, bare("lavt", dec, features, text, pad))


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_has_finite_gradients_and_changes_the_output(name):
    dec = decoder(name)
    features, text, pad, target = inputs()
    model = RiskGuidedDecoder.from_recipe(name, dec, WIDTHS, text_dim=TEXT_DIM, num_heads=4)
    before = [p.detach().clone() for p in model.parameters()]
    RiskGuidedLoss()(model(features, text, pad), target, step=0).total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    missing = sorted(n for n, g in grads.items() if g is None)
    # CADFormer builds TransformerDecoderLayer objects that nn.TransformerDecoder copies and never calls
    assert all(".decoder_layer." in n for n in missing), missing
    assert not [n for n in missing if not n.startswith("decoder.")], "a module the wrapper added got no gradient"
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_the_recipe_reads_the_internal_widths_off_the_decoder(name):
    dec = decoder(name)
    model = RiskGuidedDecoder.from_recipe(name, dec, WIDTHS, text_dim=TEXT_DIM, num_heads=4)
    assert model.fused_levels == () and model.fuse_at
    for target in model.fuse_at:  # every fuse_at name exists in the decoder
        dec.get_submodule(target)
    dec.get_submodule(model.mask_feature_from)
    expected = {
        "lavt": (32, 32), "fianet": (32, 32), "rmsin": (32, 32), "cadformer": (TEXT_DIM, TEXT_DIM),
        "aeroreformer": ((32, 16), 8), "caris": (16, 16),
    }[name]
    assert (model.fusion_dim, model.mask_feature_dim) == expected


def test_aeroreformer_gets_one_ugf_per_width_inside_the_decoder():
    model = RiskGuidedDecoder.from_recipe("aeroreformer", decoder("aeroreformer"), WIDTHS, text_dim=TEXT_DIM,
                                          num_heads=4)
    assert model.fuse_at == ("smooth3", "smooth2")
    assert isinstance(model.fusion, nn.ModuleList) and [u.dim for u in model.fusion] == [32, 16]


def test_overrides_win_and_fused_levels_alone_moves_ugf_to_the_backbone_levels():
    dec = decoder("lavt")
    model = RiskGuidedDecoder.from_recipe("lavt", dec, WIDTHS, text_dim=TEXT_DIM, num_heads=4, fused_levels=(1, 2, 3))
    assert model.fuse_at == () and model.fused_levels == (1, 2, 3) and len(model.fusion) == 3
    model = RiskGuidedDecoder.from_recipe("lavt", dec, WIDTHS, text_dim=TEXT_DIM, num_heads=4,
                                          mask_feature_from="relu2_3", use_refinement=False)
    assert model.mask_feature_from == "relu2_3" and model.refinement is None


def test_an_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"no decoder recipe named 'lavtt'.*lavt, fianet, rmsin.*Did you mean 'lavt'"):
        RiskGuidedDecoder.from_recipe("lavtt", decoder("lavt"), WIDTHS, text_dim=TEXT_DIM)


def test_the_wrong_recipe_for_a_decoder_says_which_decoder_it_expects():
    with pytest.raises(ValueError, match=r"recipe 'caris' is for VLMSDeformAttnPixelDecoder.*has a submodule "
                                         r"'input_convs'; LAVTSimpleDecoding has none"):
        RiskGuidedDecoder.from_recipe("caris", decoder("lavt"), WIDTHS, text_dim=TEXT_DIM)


def test_widths_that_do_not_fit_the_decoder_name_the_layer():
    with pytest.raises(ValueError, match=r"recipe 'lavt': conv1_4's input .* is 96 wide, but 192 was expected"):
        RiskGuidedDecoder.from_recipe("lavt", decoder("lavt"), (16, 32, 64, 128), text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match=r"four backbone widths"):
        RiskGuidedDecoder.from_recipe("lavt", decoder("lavt"), 64, text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match=r"TCMD's hidden width .* is 24 wide, but 32 was expected"):
        RiskGuidedDecoder.from_recipe("cadformer", decoder("cadformer"), WIDTHS, text_dim=32)


def test_a_recipe_of_ones_own_registers_and_a_taken_name_is_refused():
    recipe = DecoderRecipe(
        name="my-simple", decoder="SimpleDecoding (my fork)", requires="torch", placement="as lavt",
        align_corners=True, options=lambda r, dec, dim, text_dim: dict(
            call=call_coarsest_first, unpack=foreground_logit, use_fusion=False, mask_feature_from="relu2_2",
            mask_feature_dim=r.width(dec, "conv1_1", "in")),
    )
    try:
        register_recipe(recipe)
        model = RiskGuidedDecoder.from_recipe("my-simple", decoder("lavt"), WIDTHS, text_dim=TEXT_DIM)
        assert model.fusion is None and model.mask_feature_dim == 32
        with pytest.raises(ValueError, match="exists already"):
            register_recipe(recipe)
    finally:
        RECIPES.pop("my-simple", None)


# --------------------------------------------------------------------------------------------
# the rows of the guide's table of calls
# --------------------------------------------------------------------------------------------


def test_row_text_channel_first_without_padding_mask():
    seen = {}

    class ChannelFirst(nn.Module):  # forward(lan (B, D, L), x_c4, x_c3, x_c2, x_c1)
        def forward(self, lan, x_c4, x_c3, x_c2, x_c1):
            seen["lan"], seen["coarsest"] = lan, x_c4
            return x_c1[:, :1] + lan.mean(dim=(1, 2))[:, None, None, None]

    features, text, pad, _ = inputs()
    model = RiskGuidedDecoder(ChannelFirst(), WIDTHS, text_dim=TEXT_DIM, call=call_text_channels_first,
                              use_fusion=False, use_refinement=False)
    out = model(features, text, pad)
    assert seen["lan"].shape == (B, TEXT_DIM, L) and torch.equal(seen["lan"], text.transpose(1, 2))
    assert seen["coarsest"] is features[3] and out.logits.shape == (B, 1, SIZE // 4, SIZE // 4)


def test_row_no_text_at_all():
    calls = []

    class NoText(nn.Module):
        def forward(self, x_c4, x_c3, x_c2, x_c1):
            calls.append(len([x_c4, x_c3, x_c2, x_c1]))
            return x_c1[:, :1]

    features, text, pad, _ = inputs()
    out = RiskGuidedDecoder(NoText(), WIDTHS, text_dim=TEXT_DIM, call=call_coarsest_first, use_fusion=False,
                            use_refinement=False)(features, text, pad)
    assert calls == [4] and torch.equal(out.logits, features[0][:, :1])


def test_row_a_tuple_of_logits_and_feature_needs_no_unpack():
    class Pair(nn.Module):
        def forward(self, features, text, text_padding_mask):
            return features[0][:, :1], features[0], {"aux": "ignored"}

    features, text, pad, _ = inputs()
    model = RiskGuidedDecoder(Pair(), WIDTHS, text_dim=TEXT_DIM, use_fusion=False, mask_feature_dim=WIDTHS[0])
    with torch.no_grad():
        model.refinement.head[-1].weight.normal_()  # UDLR acts, so F must have reached it
    out = model(features, text, pad)
    expected = model.refinement(features[0], features[0][:, :1], out.uncertainty)
    torch.testing.assert_close(out.logits, expected)


def test_row_two_class_logits_become_the_foreground_logit():
    class TwoClass(nn.Module):
        def forward(self, x_c4, x_c3, x_c2, x_c1):
            return x_c1[:, :2]

    features, text, pad, _ = inputs()
    out = RiskGuidedDecoder(TwoClass(), WIDTHS, text_dim=TEXT_DIM, call=call_coarsest_first, unpack=foreground_logit,
                            use_fusion=False, use_refinement=False)(features, text, pad)
    assert torch.equal(out.logits, features[0][:, 1:2] - features[0][:, :1])


# --------------------------------------------------------------------------------------------
# UGF keeps the memory format of what it fuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_ugf_returns_the_memory_format_it_was_given(channels_last):
    torch.manual_seed(0)
    ugf = UncertaintyGatedFusion(16, num_heads=4, norm=False)
    visual = torch.randn(2, 16, 6, 5)
    if channels_last:
        visual = visual.contiguous(memory_format=torch.channels_last)
    levels = ugf([visual, visual[:, :, :3, :3]], torch.randn(2, 4, 16), torch.randn(2, 1, 2, 2))
    assert torch.equal(levels[0], visual)  # zero update, no norm: the identity, values and layout
    assert levels[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert levels[0].is_contiguous() != channels_last
    assert levels[1].is_contiguous()  # a sliced view in comes back contiguous
