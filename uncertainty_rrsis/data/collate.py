"""Batching of sample dicts (see :mod:`.base` for the sample keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["collate"]

_STACKED = ("image", "mask")


def collate(samples: Sequence[dict[str, Any]], *, pad_token_id: int = 0) -> dict[str, Any]:
    """Collate sample dicts into a batch dict (use as ``DataLoader(collate_fn=collate)``).

    Args:
        samples: B sample dicts with the same keys.
        pad_token_id: id used to right-pad ``input_ids`` when the samples' L differ.

    Returns:
        A dict with ``image`` (B, 3, S, S) float and ``mask`` (B, S, S) bool stacked;
        ``input_ids`` (B, L) long and ``text_padding_mask`` (B, L) bool (True = padding),
        shorter rows right-padded; ``orig_size`` (B, 2) long with rows (H, W);
        ``orig_mask`` a list of B (H_i, W_i) bool tensors (sizes may differ); ``sentence``,
        ``id``, ``tags`` and any other key as lists of length B.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    keys = list(samples[0].keys())
    for i, s in enumerate(samples):
        if set(s.keys()) != set(keys):
            raise ValueError(
                f"sample {i} has keys {sorted(s.keys())} but sample 0 has {sorted(keys)}; "
                "mix samples from one dataset configuration per batch"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key in _STACKED:
            batch[key] = torch.stack(values)
        elif key == "input_ids":
            batch[key] = _pad([torch.as_tensor(v) for v in values], pad_token_id)
        elif key == "text_padding_mask":
            batch[key] = _pad([torch.as_tensor(v, dtype=torch.bool) for v in values], True)
        elif key == "orig_size":
            batch[key] = torch.tensor([[int(v[0]), int(v[1])] for v in values], dtype=torch.long)
        else:
            batch[key] = values
    return batch


def _pad(rows: list[torch.Tensor], value: Any) -> torch.Tensor:
    length = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out
