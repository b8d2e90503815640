"""A text encoder learnt from the training sentences: the WordPiece tokenizer built with the tokenizers
library, and a run that trains with it, saves it and predicts with it, without any download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from uncertainty_rrsis.models.tokenizer import FROM_SCRATCH, scratch_bert_config, train_tokenizer  # noqa: E402

from helpers.tiny import tiny_train_config  # noqa: E402

SENTENCES = ["the red car at the top left", "the large white ship near the pier", "the small green field",
             "a road crossing the river", "the storage tank on the left"]


def test_the_tokenizer_learns_the_sentences_words():
    tok = train_tokenizer(SENTENCES)
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id] == [0, 1, 2, 3]
    ids = tok("The RED car")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "the", "red", "car", "[SEP]"]  # lower-cased, whole words
    pieces = tok.convert_ids_to_tokens(tok("redder tanks")["input_ids"])[1:-1]
    assert "[UNK]" not in pieces and tok.convert_tokens_to_string(pieces) == "redder tanks"  # unseen: in pieces
    padded = tok(["the car"], padding="max_length", max_length=8, truncation=True)
    assert padded["input_ids"][0][-1] == 0 and padded["attention_mask"][0] == [1, 1, 1, 1, 0, 0, 0, 0]


def test_the_tokenizer_saves_and_loads_back(tmp_path):
    a = train_tokenizer(SENTENCES)
    a.save_pretrained(str(tmp_path / "tok"))
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again("a road near the tank")["input_ids"] == a("a road near the tank")["input_ids"]
    with pytest.raises(ValueError, match="expected training sentences with words"):
        train_tokenizer(["", "   "])


def test_a_run_learns_its_text_encoder_from_scratch(tmp_path, tiny_bert_dir):
    """No text weights anywhere: the tokenizer comes from the training split, the encoder is a small
    random BERT that trains, and the checkpoint carries both."""
    from uncertainty_rrsis.inference import ReferringSegmenter
    from uncertainty_rrsis.training import build_trainer

    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0, eval_splits="test")
    text = {"name": FROM_SCRATCH, "pretrained": False, "freeze": False,
            "hf_config": scratch_bert_config(hidden_size=32)}
    cfg = cfg.replace(model={**cfg.model, "text": text})
    trainer = build_trainer(cfg)
    vocab = len(trainer.tokenizer)
    assert trainer.model.text.backbone.config.vocab_size == vocab and trainer.model.text.hidden_dim == 32
    before = trainer.model.text.backbone.embeddings.word_embeddings.weight.detach().clone()
    trainer.fit()
    after = trainer.model.text.backbone.embeddings.word_embeddings.weight.detach()
    assert not torch.equal(before, after)  # the text encoder trains
    (cached,) = (Path(cfg.cache_dir) / "tokenizers").iterdir()
    assert (cached / "tokenizer.json").is_file()
    best = Path(cfg.output_dir) / "checkpoints" / "best"
    saved = json.loads((best / "config.json").read_text())["config"]["text"]
    assert saved["name"] == FROM_SCRATCH and saved["hf_config"]["vocab_size"] == vocab
    segmenter = ReferringSegmenter.from_pretrained(best, device="cpu")
    assert len(segmenter.tokenizer) == vocab
    prediction = segmenter(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(), "the red car")
    assert prediction.mask.shape == (64, 64)
    again = build_trainer(cfg.replace(output_dir=str(tmp_path / "run2")))  # a second run reuses the tokenizer
    assert again.tokenizer.get_vocab() == trainer.tokenizer.get_vocab()


def test_a_text_encoder_from_scratch_cannot_be_frozen_or_pretrained():
    from uncertainty_rrsis.models import TextConfig

    with pytest.raises(ValueError, match="freeze=True would keep it at its random initialisation"):
        TextConfig(name=FROM_SCRATCH, pretrained=False, freeze=True)
    with pytest.raises(ValueError, match="has no pretrained weights"):
        TextConfig(name=FROM_SCRATCH, pretrained=True)
    assert TextConfig(name=FROM_SCRATCH, pretrained=False).freeze is False
