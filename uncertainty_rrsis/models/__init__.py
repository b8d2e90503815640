"""The reference CroBIM-U model (needs the ``models`` extra: timm, transformers, safetensors).

Importing :mod:`uncertainty_rrsis` does not import this package, so the plug-in modules work
without timm or transformers; the model, the encoders and the checkpoint helpers import them when
first used (the configs and presets do not).

Quick start (offline; the ``tiny`` preset's text encoder is learnt from scratch, with a WordPiece
tokenizer built from the training sentences)::

    from uncertainty_rrsis.models import CroBIMU, get_preset, train_tokenizer, with_vocabulary

    tokenizer = train_tokenizer(training_sentences)
    config = get_preset("tiny")
    model = CroBIMU(config.replace(text={"hf_config": with_vocabulary(config.text.hf_config, tokenizer)}))
    tokens = tokenizer(sentences, padding="max_length", max_length=20, return_tensors="pt")
    out = model(images, tokens["input_ids"], tokens["attention_mask"])   # out.logits: (B, 1, H, W)
    model.save_pretrained("runs/tiny")
    model = CroBIMU.from_pretrained("runs/tiny")    # or a Hub id: CroBIMU.from_pretrained("org/name")
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; loaded on first use, so that ``import uncertainty_rrsis.models.presets`` or
# ``.config`` reads a configuration without importing timm and transformers
_WHERE = {
    "LoadReport": "_checkpoint", "load_state_file": "_checkpoint", "strip_wrapper_prefixes": "_checkpoint",
    "model_card": "card", "write_model_card": "card",
    "CroBIMUConfig": "config", "DecoderConfig": "config", "ModelConfig": "config", "TextConfig": "config",
    "VisionConfig": "config",
    "CroBIMU": "crobim_u",
    "MaskDecoder": "decoder",
    "push_to_hub": "hub", "resolve_pretrained": "hub",
    "FROM_SCRATCH": "tokenizer", "scratch_bert_config": "tokenizer", "train_tokenizer": "tokenizer",
    "with_vocabulary": "tokenizer",
    "Preset": "presets", "get_preset": "presets", "list_presets": "presets", "register_preset": "presets",
    "preset_info": "presets", "preset_recipe": "presets",
    "MINILM_ID": "text", "TextEncoder": "text",
    "RANDOM_WEIGHTS": "vision", "VisionEncoder": "vision", "load_foreign_checkpoint": "vision",
}

__all__ = [
    "CroBIMU",
    "CroBIMUConfig",
    "ModelConfig",
    "VisionConfig",
    "TextConfig",
    "DecoderConfig",
    "Preset",
    "get_preset",
    "list_presets",
    "register_preset",
    "preset_info",
    "preset_recipe",
    "VisionEncoder",
    "RANDOM_WEIGHTS",
    "load_foreign_checkpoint",
    "TextEncoder",
    "MINILM_ID",
    "MaskDecoder",
    "LoadReport",
    "load_state_file",
    "strip_wrapper_prefixes",
    "model_card",
    "write_model_card",
    "resolve_pretrained",
    "push_to_hub",
    "FROM_SCRATCH",
    "scratch_bert_config",
    "train_tokenizer",
    "with_vocabulary",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
