"""Shared fixtures: tiny encoders for the model and training tests; nothing is downloaded.

A random 2-layer BERT (hidden 32) is saved to a temporary folder and loaded back through
``from_pretrained``; the vision backbone is a random timm ConvNeXt with four one-block stages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a small large white red ship car plane tree building road left right of at on in near "
    "pier harbor house field river bridge top bottom corner next to two one roof green"
).split()
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}
TINY_CONVNEXT = {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random tiny ``BertModel`` (config.json + model.safetensors) and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(0)
    BertModel(BertConfig(**fields)).save_pretrained(str(folder))
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_bert_dir: Path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(tiny_bert_dir))


@pytest.fixture(scope="session")
def tiny_config(tiny_bert_dir: Path):
    """A Full CroBIM-U config small enough for CPU tests (C = 32)."""
    from uncertainty_rrsis.models import CroBIMUConfig, DecoderConfig, TextConfig, VisionConfig

    return CroBIMUConfig(
        vision=VisionConfig(name="convnext_atto", model_kwargs=TINY_CONVNEXT),
        text=TextConfig(name=str(tiny_bert_dir), pretrained=True),
        decoder=DecoderConfig(num_layers=1, num_heads=4, num_points=2, ffn_dim=64, num_mask_layers=1),
        dim=32,
        image_size=64,
        fusion_heads=4,
        refine_hidden_dim=16,
    )


@pytest.fixture()
def tiny_batch(tiny_tokenizer):
    """``input_ids`` and ``attention_mask`` (2, 20) for two sentences of different lengths."""
    enc = tiny_tokenizer(
        ["the small white ship at the left of the pier", "a red car"],
        max_length=20,
        truncation=True,
        padding="max_length",
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"]
