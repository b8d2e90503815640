"""Shared fixtures: tiny encoders for the model and training tests; nothing is downloaded.

The settings live in ``helpers/tiny.py`` (one definition): a random 2-layer BERT (hidden 32)
is saved to a temporary folder and loaded back through ``from_pretrained``; the vision
backbone is a random timm ConvNeXt with four one-block stages.
"""

from __future__ import annotations

import os

# OpenMP worker threads that spin while they wait burn the CPU time other processes need: on a
# shared 2-core machine the tests' many tiny ops then run several times slower (the everyday
# `-m "not slow"` run went from about 20 s to 2 min next to another busy process). Passive waiting
# costs nothing measurable when the machine is idle. Set before torch (and its OpenMP) is loaded;
# a value given by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers.tiny import TINY_SENTENCES, save_tiny_bert  # noqa: E402
from helpers.tiny import tiny_config as build_tiny_config  # noqa: E402


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
