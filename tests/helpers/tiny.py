"""The one tiny reference-model setting of the tests: a random 2-layer BERT (hidden 32), a
ConvNeXt with four one-block stages and a width-32 decoder; nothing is downloaded.

``tests/conftest.py`` turns these into session fixtures (``tiny_bert_dir``, ``tiny_tokenizer``,
``tiny_config``); tests that need the settings without a fixture import them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "TINY_VOCAB", "TINY_BERT", "TINY_CONVNEXT", "TINY_SENTENCES",
    "bert_tokenizer", "save_tiny_bert", "tiny_model_overrides", "tiny_config", "tiny_train_config",
]

#: Word list of the tiny tokenizer (BERT special tokens first).
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a small large white red ship car plane tree building road left right of at on in near "
    "pier harbor house field river bridge top bottom corner next to two one roof green"
).split()

#: Hugging Face config of the random tiny BERT.
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}

#: timm ``model_kwargs`` of the tiny ConvNeXt (``convnext_atto`` with narrower, one-block stages).
TINY_CONVNEXT = {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}

#: Two sentences of different lengths, both within ``TINY_VOCAB``.
TINY_SENTENCES = ("the small white ship at the left of the pier", "a red car")


def bert_tokenizer(vocab_file: Path) -> Any:
    """A lower-casing BERT WordPiece tokenizer of the word list in ``vocab_file`` (one per line).

    transformers 5 takes the list as ``vocab`` and ignores ``vocab_file`` (the tokenizer would hold
    the special tokens only); 4.x takes ``vocab_file``.

    Raises:
        AssertionError: the tokenizer does not hold the whole list.
    """
    from transformers import BertTokenizerFast

    words = vocab_file.read_text(encoding="utf-8").split()
    try:
        tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    except TypeError:
        tokenizer = None
    if tokenizer is None or len(tokenizer) != len(words):
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    assert len(tokenizer) == len(words), f"the tokenizer holds {len(tokenizer)} of the {len(words)} words"
    return tokenizer


def save_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """Write a random ``BertModel`` of ``TINY_BERT`` (config.json + model.safetensors) and its
    tokenizer (``TINY_VOCAB``) into ``folder``; returns ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(seed)
    BertModel(BertConfig(**fields)).save_pretrained(str(folder))
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    bert_tokenizer(vocab).save_pretrained(str(folder))
    return folder


def tiny_model_overrides(text_name: str | Path) -> dict[str, Any]:
    """The tiny model as config overrides (what ``TrainConfig(model=...)`` merges into a preset).

    ``text_name`` is the folder of the text encoder (e.g. :func:`save_tiny_bert`'s), loaded
    with ``from_pretrained``. The decoder has width C = 32.
    """
    return {
        "vision": {"name": "convnext_atto", "model_kwargs": dict(TINY_CONVNEXT)},
        "text": {"name": str(text_name), "pretrained": True},
        "decoder": {"num_layers": 1, "num_heads": 4, "num_points": 2, "ffn_dim": 64, "num_mask_layers": 1},
        "dim": 32,
        "fusion_heads": 4,
        "refine_hidden_dim": 16,
    }


def tiny_config(text_name: str | Path, *, image_size: int = 64):
    """A Full CroBIM-U config small enough for CPU tests: the library defaults with
    :func:`tiny_model_overrides` at ``image_size`` pixels."""
    from uncertainty_rrsis.models import CroBIMUConfig

    return CroBIMUConfig().replace(**tiny_model_overrides(text_name), image_size=image_size)


def tiny_train_config(tmp: Path, bert_dir: Path, **changes: Any):
    """A :class:`~uncertainty_rrsis.training.TrainConfig` of a run that takes seconds on a CPU.

    The tiny model at 64 px with a trained text encoder (so DDP sees every parameter in use),
    16 / 5 / 7 synthetic samples cached under ``tmp/cache``, batches of 4, two epochs (8 steps) without
    a learning-rate warm-up,
    the run folder ``tmp/run``; ``changes`` replace any of these settings.
    """
    from uncertainty_rrsis.training import TrainConfig

    model = tiny_model_overrides(bert_dir)
    model["text"] = {**model["text"], "freeze": False}
    model["image_size"] = 64
    base = {"dataset": "synthetic", "cache_dir": str(tmp / "cache"), "synthetic_train": 16, "synthetic_val": 5,
            "synthetic_test": 7, "batch_size": 4, "epochs": 2, "lr": 1e-3, "lr_warmup_steps": 0,
            "unc_warmup_steps": 2,
            "output_dir": str(tmp / "run"), "checkpoint_every": 3, "panels": 2, "progress": False,
            "tensorboard": False, "device": "cpu", "model": model, "seed": 3}
    return TrainConfig(**{**base, **changes})


def perturbed_model(config: Any, *, seed: int = 0, **changes: Any):
    """A :class:`~uncertainty_rrsis.models.CroBIMU` of ``config`` (with ``changes``) in eval mode, every
    parameter moved by N(0, 0.02) noise, so that the branches initialised at zero (UGF's output, UDLR's
    last convolution) act and the outputs depend on every module."""
    import torch

    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(seed)
    model = CroBIMU(config.replace(**changes) if changes else config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()
