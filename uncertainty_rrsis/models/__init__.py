"""The reference CroBIM-U model (needs the ``models`` extra: timm, transformers, safetensors).

Importing :mod:`uncertainty_rrsis` does not import this package, so the plug-in modules work
without timm or transformers; ``import uncertainty_rrsis.models`` does import both.

Quick start (offline, random vision weights, pretrained all-MiniLM-L6-v2 text encoder)::

    from uncertainty_rrsis.models import CroBIMU, get_preset

    model = CroBIMU(get_preset("tiny"))
    out = model(images, input_ids, attention_mask)       # out.logits: (B, 1, H, W)
    model.save_pretrained("runs/tiny")
    model = CroBIMU.from_pretrained("runs/tiny")
"""

from ._checkpoint import LoadReport, load_state_file, strip_wrapper_prefixes
from .card import model_card, write_model_card
from .config import CroBIMUConfig, DecoderConfig, ModelConfig, TextConfig, VisionConfig
from .crobim_u import CroBIMU
from .decoder import MaskDecoder
from .presets import get_preset, list_presets, register_preset
from .text import MINILM_ID, TextEncoder, minilm_path, resolve_text_source
from .vision import RANDOM_WEIGHTS, VisionEncoder, load_foreign_checkpoint

__all__ = [
    "CroBIMU",
    "CroBIMUConfig",
    "ModelConfig",
    "VisionConfig",
    "TextConfig",
    "DecoderConfig",
    "get_preset",
    "list_presets",
    "register_preset",
    "VisionEncoder",
    "RANDOM_WEIGHTS",
    "load_foreign_checkpoint",
    "TextEncoder",
    "minilm_path",
    "resolve_text_source",
    "MINILM_ID",
    "MaskDecoder",
    "LoadReport",
    "load_state_file",
    "strip_wrapper_prefixes",
    "model_card",
    "write_model_card",
]
