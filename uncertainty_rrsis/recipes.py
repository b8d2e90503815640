"""Named recipes: the :class:`~uncertainty_rrsis.RiskGuidedDecoder` arguments for published decoders.

One line wraps a decoder from the field as its repository defines it::

    from uncertainty_rrsis import RiskGuidedDecoder

    model = RiskGuidedDecoder.from_recipe("lavt", decoder, (128, 256, 512, 1024), text_dim=768)

A recipe knows the decoder's calling convention (``call``), its output (``unpack``), which of
its layers gives the mask feature ``F`` (``mask_feature_from``) and where UGF goes inside it
(``fuse_at``); it reads the decoder's internal widths off its own layers and checks them against
the backbone widths given, so a wrong recipe or wrong widths fail at construction with the layer
that disagrees. Any argument of the wrapper can still be passed and wins over the recipe's.

Add a recipe of your own with :func:`register_recipe`; :data:`RECIPES` lists them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import nn

from .adapters import call_coarsest_first, call_text_channels_first, call_with_keep_mask, foreground_logit

__all__ = ["DecoderRecipe", "RECIPES", "get_recipe", "register_recipe"]

RecipeOptions = Callable[["DecoderRecipe", nn.Module, tuple[int, ...], int], dict[str, Any]]


@dataclass(frozen=True)
class DecoderRecipe:
    """How to wrap one published decoder.

    Attributes:
        name: the key of :data:`RECIPES`.
        decoder: the class and where it is defined (repository and file).
        requires: what the decoder's own code needs installed (the wrapper needs only torch and
            einops).
        placement: where UGF goes and why, in one sentence.
        align_corners: how that repository resizes its stride-4 logits to the image before
            scoring; resize the wrapper's ``logits`` the same way to compare with its published
            numbers.
        options: ``options(recipe, decoder, dim, text_dim) -> dict`` of wrapper keyword arguments;
            reads the internal widths off ``decoder`` and raises a ``ValueError`` when they do not
            fit ``dim`` / ``text_dim``.
    """

    name: str
    decoder: str
    requires: str
    placement: str
    align_corners: bool
    options: RecipeOptions

    def wrapper_options(self, decoder: nn.Module, dim: Sequence[int], text_dim: int) -> dict[str, Any]:
        """The keyword arguments of :class:`~uncertainty_rrsis.RiskGuidedDecoder` for ``decoder``."""
        widths = tuple(int(d) for d in dim) if isinstance(dim, Sequence) else None
        if widths is None or len(widths) != 4:
            raise ValueError(
                f"recipe {self.name!r}: dim must be the four backbone widths, finest first (Swin-B: "
                f"(128, 256, 512, 1024)); got {dim!r}."
            )
        return dict(self.options(self, decoder, widths, int(text_dim)))

    # ---- helpers for options functions ---------------------------------------------------------

    def layer(self, decoder: nn.Module, name: str) -> nn.Module:
        """``decoder.get_submodule(name)``, or a ValueError saying which decoder this recipe expects."""
        try:
            return decoder.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"recipe {self.name!r} is for {self.decoder}, which has a submodule {name!r}; "
                f"{type(decoder).__name__} has none. Choose the recipe of your decoder (known: "
                f"{', '.join(RECIPES)}) or pass the wrapper's arguments yourself."
            ) from None

    def width(self, decoder: nn.Module, name: str, side: str = "out") -> int:
        """Channels read (``side="in"``) or written (``"out"``) by the layer ``name`` (the first / last
        convolution or linear map inside it)."""
        module = self.layer(decoder, name)
        maps = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        if not maps:
            raise ValueError(f"recipe {self.name!r}: decoder.{name} holds no convolution or linear layer.")
        if side == "in":
            first = maps[0]
            return int(first.in_features if isinstance(first, nn.Linear) else first.in_channels)
        last = maps[-1]
        return int(last.out_features if isinstance(last, nn.Linear) else last.out_channels)

    def expect(self, what: str, got: int, want: int, fix: str) -> None:
        """Raise a ValueError when the decoder's width ``got`` differs from ``want``."""
        if got != want:
            raise ValueError(f"recipe {self.name!r}: {what} is {got} wide, but {want} was expected. {fix}")


#: The registered recipes by name: the six built-in ones, then any added with :func:`register_recipe`.
RECIPES: dict[str, DecoderRecipe] = {}


def register_recipe(recipe: DecoderRecipe, *, overwrite: bool = False) -> DecoderRecipe:
    """Add ``recipe`` to :data:`RECIPES` under ``recipe.name``; a taken name needs ``overwrite=True``."""
    if recipe.name in RECIPES and not overwrite:
        raise ValueError(f"a recipe named {recipe.name!r} exists already; pass overwrite=True to replace it.")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> DecoderRecipe:
    """The recipe registered as ``name``; an unknown name is a ValueError that lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        near = difflib.get_close_matches(str(name), list(RECIPES), n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"no decoder recipe named {name!r}; known: {', '.join(RECIPES)}.{hint}") from None


# ---- the field's decoders --------------------------------------------------------------------

_WIDTHS_FIX = "Give dim the four backbone widths the decoder was built for, finest first."


def _simple_decoding(recipe: DecoderRecipe, decoder: nn.Module, dim: tuple[int, ...], text_dim: int) -> dict:
    """LAVT / FIANet / RMSIN ``SimpleDecoding`` and CADFormer ``TCMD``: three top-down stages.

    UGF on the outputs of the two upper stages (``relu2_4`` at stride 16, ``relu2_3`` at stride 8),
    one shared instance at the decoder's hidden width; ``F`` is the output of ``relu2_2``.
    """
    hidden = recipe.width(decoder, "conv1_1", side="in")
    recipe.expect("conv1_4's input (x_c4 and x_c3 concatenated)", recipe.width(decoder, "conv1_4", "in"),
                  dim[3] + dim[2], _WIDTHS_FIX)
    recipe.expect("conv1_3's input (hidden + x_c2)", recipe.width(decoder, "conv1_3", "in"), hidden + dim[1],
                  _WIDTHS_FIX)
    recipe.expect("conv1_2's input (hidden + x_c1)", recipe.width(decoder, "conv1_2", "in"), hidden + dim[0],
                  _WIDTHS_FIX)
    options = dict(unpack=foreground_logit, fuse_at=("relu2_4", "relu2_3"), fusion_dim=hidden,
                   mask_feature_from="relu2_2", mask_feature_dim=hidden)
    if recipe.name == "cadformer":
        recipe.expect("TCMD's hidden width (its word attention's width)", hidden, text_dim,
                      "TCMD attends to the words at its own width: pass text_dim equal to it (768 for BERT-base).")
        return dict(call=call_text_channels_first, **options)
    return dict(call=call_coarsest_first, **options)


def _aeroreformer(recipe: DecoderRecipe, decoder: nn.Module, dim: tuple[int, ...], text_dim: int) -> dict:
    """AeroReformer's ``SimpleDecoding``: UGF after ``smooth3`` (C/2) and ``smooth2`` (C/4), F after ``smooth1``."""
    for i, width in enumerate(dim, start=1):
        recipe.expect(f"lat{i}'s input", recipe.width(decoder, f"lat{i}", "in"), width, _WIDTHS_FIX)
    return dict(
        call=call_coarsest_first, unpack=foreground_logit, fuse_at=("smooth3", "smooth2"),
        fusion_dim=(recipe.width(decoder, "reduce4"), recipe.width(decoder, "reduce3")),
        mask_feature_from="smooth1", mask_feature_dim=recipe.width(decoder, "final_conv", side="in"),
    )


def _caris(recipe: DecoderRecipe, decoder: nn.Module, dim: tuple[int, ...], text_dim: int) -> dict:
    """CARIS's pixel decoder: UGF on its ``input_convs`` (the projected encoder levels), F from ``mask_feature``."""
    convs = cast(nn.ModuleList, recipe.layer(decoder, "input_convs"))  # a ModuleList in CARIS
    names = tuple(f"input_convs.{i}" for i in range(len(convs)))
    for i, name in enumerate(names):  # coarsest first
        recipe.expect(f"{name}'s input", recipe.width(decoder, name, "in"), dim[-1 - i], _WIDTHS_FIX)
    recipe.expect("lang_in_linear's input (the word width)", recipe.width(decoder, "lang_in_linear", "in"), text_dim,
                  "Pass text_dim equal to the width of the words the decoder reads (768 for BERT-base).")
    return dict(call=call_with_keep_mask, unpack=foreground_logit, fuse_at=names,
                fusion_dim=recipe.width(decoder, names[0]), mask_feature_from="mask_feature",
                mask_feature_dim=recipe.width(decoder, "mask_feature"))


_LAVT_PLACEMENT = (
    "UGF on the outputs of the two upper top-down stages (relu2_4, stride 16; relu2_3, stride 8), one "
    "instance at the decoder's hidden width (C/2), as the paper uses one UGF at the decoder's width; the "
    "stride-32 level has no map of its own inside the decoder (the first stage merges it with stride 16)."
)

for _recipe in (
    DecoderRecipe(
        name="lavt", decoder="SimpleDecoding (yz93/LAVT-RIS, lib/mask_predictor.py)",
        requires="torch", placement=_LAVT_PLACEMENT, align_corners=True, options=_simple_decoding,
    ),
    DecoderRecipe(
        name="fianet", decoder="SimpleDecoding (Shaosifan/FIANet, lib/mask_predictor.py; LAVT's layers)",
        requires="torch", placement=_LAVT_PLACEMENT, align_corners=True, options=_simple_decoding,
    ),
    DecoderRecipe(
        name="rmsin", decoder="SimpleDecoding (Lsan2401/RMSIN, lib/mask_predictor.py)",
        requires="torch, einops and the repository's own arc/ package (AdaptiveRotatedConv2d, pure PyTorch)",
        placement=_LAVT_PLACEMENT, align_corners=True, options=_simple_decoding,
    ),
    DecoderRecipe(
        name="aeroreformer", decoder="SimpleDecoding (lironui/AeroReformer, lib/mask_predictor.py)",
        requires="torch, einops, the repository's arc/ package and lib/linear_attention.py (pure PyTorch)",
        placement=(
            "UGF on the outputs of the two upper stages (smooth3, stride 16, C/2 wide; smooth2, stride 8, C/4 "
            "wide), one instance per width; F is smooth1's output (C/8, stride 4)."
        ),
        align_corners=True, options=_aeroreformer,
    ),
    DecoderRecipe(
        name="cadformer", decoder="TCMD (zxk688/CADFormer, lib/mask_predictor.py)",
        requires="torch, einops and the repository's arc/ package (pure PyTorch)",
        placement=(
            "UGF on the outputs of the two upper stages (relu2_4, relu2_3), right before the decoder's own word "
            "attention (transformer_fusion1, transformer_fusion2), one instance at its width (768)."
        ),
        align_corners=True, options=_simple_decoding,
    ),
    DecoderRecipe(
        name="caris", decoder="VLMSDeformAttnPixelDecoder (lsa1997/CARIS, model/msdeform_decoder.py)",
        requires=(
            "mmcv-full 1.x (ConvModule, MultiScaleDeformableAttention: on CPU its pure-PyTorch path), mmdet 2.x "
            "(MlvlPointGenerator, SinePositionalEncoding), timm, and the repository's model/tranformer_decoder.py"
        ),
        placement=(
            "UGF on the outputs of input_convs (the three coarsest levels projected to the decoder's width, "
            "strides 32, 16, 8), one shared instance, once, before the deformable encoder: where the paper puts it."
        ),
        align_corners=True, options=_caris,
    ),
):
    register_recipe(_recipe)
del _recipe
