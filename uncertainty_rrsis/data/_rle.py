"""COCO mask encodings in pure NumPy: compressed RLE strings, uncompressed RLE, polygons.

COCO stores a binary mask of ``H x W`` pixels as run lengths over the pixels in
column-major (Fortran) order, starting with a run of zeros. The compressed form packs
the runs into a printable string (5 bits per character, offset 48, each run after the
second stored as the difference to the run two places before). Decoding is exact, so
no compiled extension is needed for RLE; polygons are rasterised with pycocotools (the
rasteriser every RRSIS code base used).

Shapes:
    masks: (H, W) bool
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "decode_counts",
    "encode_counts",
    "rle_decode",
    "rle_encode",
    "polygons_to_mask",
    "segmentation_to_mask",
]


def decode_counts(text: str | bytes) -> list[int]:
    """Unpack a compressed COCO RLE ``counts`` string into run lengths."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    pos = 0
    n = len(text)
    while pos < n:
        value = 0
        shift = 0
        while True:
            if pos >= n:
                raise ValueError("truncated COCO RLE counts string")
            c = ord(text[pos]) - 48
            pos += 1
            value |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    value -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_counts(counts: Sequence[int]) -> str:
    """Pack run lengths into a compressed COCO RLE ``counts`` string."""
    out: list[str] = []
    for i, run in enumerate(counts):
        value = int(run) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = value & 0x1F
            value >>= 5
            more = value != -1 if c & 0x10 else value != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out)


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode one COCO RLE dict (``{"size": [H, W], "counts": str | list[int]}``) to (H, W) bool."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = decode_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    total = sum(runs)
    if total != height * width or any(r < 0 for r in runs):
        raise ValueError(f"RLE runs sum to {total} pixels but size {height}x{width} needs {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a (H, W) mask as a compressed COCO RLE dict with a string ``counts``."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a (H, W) mask; got shape {mask.shape}")
    flat = mask.T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encode_counts(runs)}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (each a flat ``[x1, y1, x2, y2, ...]`` list) to (H, W) bool.

    Uses pycocotools' rasteriser (that of the reference ``refer`` API), so masks match the
    field's evaluation bit for bit.
    """
    try:
        from pycocotools import mask as coco_mask
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "COCO polygon segmentations need pycocotools: pip install 'uncertainty-rrsis[data]'"
        ) from exc
    out = np.zeros((height, width), dtype=bool)
    for rle in coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width):
        out |= rle_decode(rle)  # pycocotools rasterises, our exact decoder unpacks
    return out


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Union of a COCO ``segmentation`` field (RLE dict, list of RLE dicts, or polygons).

    Raises ``ValueError`` when the encoded size differs from ``(height, width)``.
    """
    if isinstance(segmentation, Mapping):
        parts: list[Any] = [segmentation]
    elif isinstance(segmentation, Sequence) and segmentation:
        parts = list(segmentation)
    else:
        raise ValueError("empty or unrecognised COCO segmentation")
    if all(isinstance(p, Sequence) and not isinstance(p, (str, bytes)) for p in parts):
        return polygons_to_mask(parts, height, width)
    out = np.zeros((height, width), dtype=bool)
    for part in parts:
        if not isinstance(part, Mapping):
            raise ValueError("a COCO segmentation mixes polygons and RLE dicts")
        size = tuple(int(v) for v in part["size"])
        if size != (height, width):
            raise ValueError(f"RLE size {size[0]}x{size[1]} differs from the image size {height}x{width}")
        out |= rle_decode(part)
    return out
