"""A text encoder learnt from the training sentences: its WordPiece tokenizer and its architecture.

``TextConfig(name=FROM_SCRATCH, pretrained=False, hf_config=scratch_bert_config())`` asks for a
small BERT trained with the rest of the model, and a tokenizer built from the training split's
sentences with the ``tokenizers`` library: nothing is downloaded and no pretrained weights are
needed. Its vocabulary is the training sentences' words (lower-cased) and WordPiece pieces of
them; any other word is split into pieces down to single characters, so a sentence never seen in
training still tokenizes.

A run builds the tokenizer once (:func:`train_tokenizer`) and saves it with every checkpoint
(``tokenizer/``), so a checkpoint loads and predicts like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FROM_SCRATCH", "SPECIAL_TOKENS", "scratch_bert_config", "train_tokenizer", "with_vocabulary"]

#: The text encoder name that asks for a tokenizer and a BERT learnt from the training sentences.
FROM_SCRATCH = "from-scratch"
#: BERT's special tokens, [PAD] first (id 0, as transformers' BERT expects).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def scratch_bert_config(*, hidden_size: int = 128, layers: int = 2, heads: int = 2, max_tokens: int = 20,
                        vocab_size: int | None = None) -> dict[str, Any]:
    """A small BERT as a transformers config dict (``vocab_size`` is filled in once the tokenizer
    is built)."""
    config: dict[str, Any] = {"model_type": "bert", "hidden_size": hidden_size, "num_hidden_layers": layers,
                              "num_attention_heads": heads, "intermediate_size": 4 * hidden_size,
                              "max_position_embeddings": max(32, max_tokens), "type_vocab_size": 1}
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    return config


def train_tokenizer(sentences: Iterable[str], *, vocab_size: int = 2000, max_tokens: int = 20) -> Any:
    """A lower-casing WordPiece tokenizer learnt from ``sentences``, as a transformers
    ``PreTrainedTokenizerFast`` (``[CLS] ... [SEP]``, padding with ``[PAD]`` = 0).

    Two trainings on the same sentences may number the pieces differently (the ``tokenizers``
    trainer breaks ties in no fixed order): a run builds its tokenizer once and keeps it
    (:func:`uncertainty_rrsis.training.tokenizer_from_training_sentences`).

    Args:
        sentences: the training sentences.
        vocab_size: the largest vocabulary (a small corpus gives fewer: every word and its pieces).
        max_tokens: recorded as the tokenizer's ``model_max_length``.

    Raises:
        ValueError: no sentence with a word in it.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = sorted({s for s in sentences if s and s.strip()})
    if not corpus:
        raise ValueError("train_tokenizer: expected training sentences with words in them; got none")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_tokens)


def with_vocabulary(hf_config: Mapping[str, Any] | None, tokenizer: Any) -> dict[str, Any]:
    """``hf_config`` (default :func:`scratch_bert_config`) with the tokenizer's vocabulary size."""
    return {**(hf_config or scratch_bert_config()), "vocab_size": len(tokenizer)}
