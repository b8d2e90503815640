"""Tokenization of one sentence: the place where a tokenizer's ``attention_mask`` (1 = keep)
becomes the library's ``text_padding_mask`` (bool, True = padding)."""

from __future__ import annotations

from typing import Any

import torch

from .._attention import padding_from_keep

__all__ = ["tokenize"]


def tokenize(tokenizer: Any, sentence: str, *, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize one sentence with a Hugging Face-style tokenizer.

    The tokenizer is called as ``tokenizer([sentence], padding="max_length",
    truncation=True, max_length=max_tokens, return_tensors="pt")`` (special tokens on,
    right padding, cut to ``max_tokens`` ids like the LAVT family).

    Returns:
        input_ids: (L,) long, L = ``max_tokens``.
        text_padding_mask: (L,) bool, True = padding.
    """
    enc = tokenizer(
        [sentence],
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    input_ids = torch.as_tensor(enc["input_ids"])[0].long()
    keep = torch.as_tensor(enc["attention_mask"])[0]
    if input_ids.shape != (max_tokens,) or keep.shape != (max_tokens,):
        raise ValueError(
            f"the tokenizer returned input_ids of shape {tuple(input_ids.shape)} for max_length="
            f"{max_tokens}; it must pad to max_length (padding='max_length', truncation=True)"
        )
    return input_ids, padding_from_keep(keep)
