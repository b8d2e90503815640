"""Shared fixtures: tiny encoders for the model and training tests; nothing is downloaded.

The settings live in ``helpers/tiny.py`` (one definition): a random 2-layer BERT (hidden 32)
is saved to a temporary folder and loaded back through ``from_pretrained``; the vision
backbone is a random timm ConvNeXt with four one-block stages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.tiny import TINY_SENTENCES, save_tiny_bert, tiny_config as build_tiny_config


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random tiny ``BertModel`` (config.json + model.safetensors) and its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_bert_dir: Path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(tiny_bert_dir))


@pytest.fixture(scope="session")
def tiny_config(tiny_bert_dir: Path):
    """A Full CroBIM-U config small enough for CPU tests (C = 32, 64 px)."""
    return build_tiny_config(tiny_bert_dir)


@pytest.fixture()
def tiny_batch(tiny_tokenizer):
    """``input_ids`` and ``attention_mask`` (2, 20) for two sentences of different lengths."""
    enc = tiny_tokenizer(
        list(TINY_SENTENCES),
        max_length=20,
        truncation=True,
        padding="max_length",
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"]
