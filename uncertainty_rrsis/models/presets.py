"""Named configurations of the reference model, each with its training recipe.

- ``paper``: ConvNeXt-B (timm ``convnext_base``) + BERT-base (``bert-base-uncased``), C = 256,
  a 6-layer decoder with 8 heads and 4 points, 480x480 images, 20 tokens; its recipe: AdamW 5e-5,
  weight decay 0.01, 40 epochs, total batch 32 (the values the paper states) and the library's
  choices where the paper gives none (see the docs' paper-in-code page). Its vision backbone is
  meant to start from pretrained weights.
- ``tiny``: timm ``convnext_atto`` + a small BERT learnt from scratch with the model (2 layers,
  hidden 128, ``text.name="from-scratch"``: its WordPiece tokenizer is built from the training
  sentences, nothing is downloaded), C = 64, a 2-layer decoder with 4 heads,
  128x128 images, RUS on the stride-8 level (``score_level=1``, an option beyond the paper: on the
  synthetic benchmark it ranks error pixels far better than the stride-32 map, at the same mIoU)
  and both risk heads (``risk_head``, ``pixel_risk_head``, options beyond the paper: each answer
  gets a failure probability and a predicted IoU, each pixel an error logit) -- for CPU work,
  demos and smoke tests; its recipe warms the learning rate up over 100 steps (without it the text
  encoder learnt from scratch falls behind on some seeds).

A preset is registered once, with its model config and its training recipe::

    register_preset("small", lambda: get_preset("tiny").replace(dim=96), recipe={"lr": 5e-4, "epochs": 8})

``get_preset(name, **overrides)`` returns a :class:`~uncertainty_rrsis.models.config.CroBIMUConfig`;
overrides follow :meth:`CroBIMUConfig.replace` (a dict for a sub-config is merged into it)::

    cfg = get_preset("paper", use_fusion=False, vision={"weights": "convnext_base_22k.safetensors"})

:func:`preset_recipe` gives the training recipe, which
:class:`~uncertainty_rrsis.training.TrainConfig` applies under the settings a run gives.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import CroBIMUConfig, DecoderConfig, TextConfig, VisionConfig
from .tokenizer import FROM_SCRATCH, scratch_bert_config

__all__ = ["Preset", "get_preset", "list_presets", "register_preset", "preset_info", "preset_recipe"]


def _paper() -> CroBIMUConfig:
    return CroBIMUConfig(
        vision=VisionConfig(name="convnext_base", out_indices=(0, 1, 2, 3), requires_weights=True),
        text=TextConfig(name="bert-base-uncased", pretrained=True, max_tokens=20),
        decoder=DecoderConfig(num_layers=6, num_heads=8, num_points=4, ffn_dim=1024, num_mask_layers=3),
        dim=256,
        image_size=480,
        fusion_heads=8,
        refine_hidden_dim=64,
        refine_at="input",  # the paper computes UDLR's residual "at full resolution"
    )


def _tiny() -> CroBIMUConfig:
    return CroBIMUConfig(
        vision=VisionConfig(name="convnext_atto", out_indices=(0, 1, 2, 3)),
        text=TextConfig(name=FROM_SCRATCH, pretrained=False, hf_config=scratch_bert_config(max_tokens=20),
                        max_tokens=20),
        decoder=DecoderConfig(num_layers=2, num_heads=4, num_points=4, ffn_dim=128, num_mask_layers=1),
        dim=64,
        image_size=128,
        fusion_heads=4,
        refine_hidden_dim=32,
        # beyond the paper: a 16 x 16 U at 128 px instead of 4 x 4 (it ranks error pixels far better at
        # the same mIoU; see the uncertainty study in the docs)
        score_level=1,
        # beyond the paper: the risk heads, reading the detached model (they flag failed answers better than
        # the margin, at the same mIoU; see the risk study in the docs)
        risk_head=True,
        pixel_risk_head=True,
    )


@dataclass(frozen=True)
class Preset:
    """A registered preset.

    Attributes:
        name: the name given to :func:`get_preset` (and ``--preset``).
        factory: returns a fresh model config.
        recipe: training settings of the preset (keys of
            :class:`~uncertainty_rrsis.training.TrainConfig`'s recipe fields: ``lr``, ``epochs``,
            ``batch_size``, ...) and, under ``"model"``, model-config overrides of the recipe.
        pretrained_backbone: the vision backbone is meant to start from pretrained weights (training
            such a preset without ``vision.weights`` is refused unless random initialisation is asked for).
    """

    name: str
    factory: Callable[[], CroBIMUConfig]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    pretrained_backbone: bool = False


_PRESETS: dict[str, Preset] = {}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return sorted(_PRESETS)


def register_preset(
    name: str,
    factory: Callable[[], CroBIMUConfig],
    *,
    recipe: Mapping[str, Any] | None = None,
    pretrained_backbone: bool = False,
    overwrite: bool = False,
) -> Preset:
    """Add a named configuration with its training recipe (see :class:`Preset`).

    Raises:
        ValueError: ``name`` is taken (without ``overwrite``), or the recipe is not a mapping.
    """
    if name in _PRESETS and not overwrite:
        raise ValueError(f"preset {name!r} already exists; pass overwrite=True to replace it.")
    if recipe is not None and not isinstance(recipe, Mapping):
        raise ValueError(f"register_preset({name!r}): recipe must be a mapping of training settings; "
                         f"got {type(recipe).__name__}.")
    preset = Preset(name, factory, dict(recipe or {}), bool(pretrained_backbone))
    _PRESETS[name] = preset
    return preset


def preset_info(name: str) -> Preset:
    """The registered :class:`Preset` ``name``.

    Raises:
        ValueError: for an unknown preset (the message lists the known ones).
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {list_presets()}.")
    return _PRESETS[name]


def preset_recipe(name: str) -> dict[str, Any]:
    """A copy of the training recipe of preset ``name`` (empty for a preset registered without one)."""
    return copy.deepcopy(dict(preset_info(name).recipe))


def get_preset(name: str, **overrides: Any) -> CroBIMUConfig:
    """The configuration called ``name`` with ``overrides`` applied.

    Args:
        name: ``"paper"`` or ``"tiny"`` (see :func:`list_presets`).
        **overrides: fields of :class:`CroBIMUConfig`; for ``vision`` / ``text`` / ``decoder`` a
            dict is merged into the preset's sub-config, a config object replaces it.

    Raises:
        ValueError: for an unknown preset or field.
    """
    config = preset_info(name).factory()
    return config.replace(**overrides) if overrides else config


register_preset(
    "paper", _paper, pretrained_backbone=True,
    # AdamW 5e-5, weight decay 0.01, 40 epochs, total batch 32, 480 x 480, 20 tokens (stated by the paper);
    # poly power 0.9, the L_unc warm-up, no clipping, checkpoint and panel counts: the library's choices
    recipe={"lr": 5e-5, "weight_decay": 0.01, "poly_power": 0.9, "epochs": 40, "batch_size": 32,
            "unc_warmup_steps": 1000, "grad_clip": None, "checkpoint_every": 1000, "panels": 16,
            "model": {"image_size": 480, "text": {"max_tokens": 20}}},
)
register_preset(
    "tiny", _tiny,
    # the embedded default: 128 px, a text encoder learnt from scratch, 935 steps of 16 on 3,000 synthetic
    # samples (DEFAULT_RECIPE) after a 100-step learning-rate warm-up
    recipe={"lr_warmup_steps": 100},
)
