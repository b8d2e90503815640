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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_MASK_PIXELS",
    "segmentation_problem",
    "decode_counts",
    "encode_counts",
    "rle_decode",
    "rle_encode",
    "polygons_to_mask",
    "segmentation_to_mask",
]


#: The largest mask decoded, in pixels: Pillow's decompression-bomb limit (2 x 89,478,485), so a
#: few bytes of annotation can never make the reader allocate more than an image could.
MAX_MASK_PIXELS = 2 * 89_478_485


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _rle_problem(rle: Mapping[str, Any]) -> str | None:
    size = rle.get("size")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v >= 0 for v in size):
        return f"RLE 'size' must be [height, width] (two non-negative integers); got {size!r:.60}"
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        return None
    if isinstance(counts, list):
        if all(_is_int(c) for c in counts):
            return None
        return "RLE 'counts' list must hold integers only"
    return f"RLE 'counts' must be a string (compressed) or a list of integers; got {type(counts).__name__}"


def segmentation_problem(segmentation: Any) -> str | None:
    """What is wrong with the *types* of a COCO ``segmentation`` field, or None.

    Accepted: an RLE dict ``{"size": [H, W], "counts": str | list[int]}``, a non-empty list
    of RLE dicts, or a non-empty list of polygons (each a flat list of at least 6 finite
    numbers, an even count). Values (runs summing to the size) are checked when decoding.
    """
    if isinstance(segmentation, Mapping):
        return _rle_problem(segmentation)
    if not isinstance(segmentation, (list, tuple)) or not segmentation:
        return f"must be an RLE dict, a list of RLE dicts or a list of polygons; got {type(segmentation).__name__}"
    if all(isinstance(p, Mapping) for p in segmentation):
        for i, part in enumerate(segmentation):
            problem = _rle_problem(part)
            if problem:
                return f"part {i}: {problem}"
        return None
    if all(isinstance(p, (list, tuple)) for p in segmentation):
        for i, poly in enumerate(segmentation):
            if len(poly) < 6 or len(poly) % 2:
                return f"polygon {i} has {len(poly)} numbers; a polygon is [x1, y1, x2, y2, x3, y3, ...]"
            if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in poly):
                return f"polygon {i} holds values that are not finite numbers"
        return None
    kinds = sorted({type(p).__name__ for p in segmentation})
    return f"must be a list of RLE dicts or of polygons; got a list of {', '.join(kinds)}"


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


def rle_decode(rle: Mapping[str, Any], *, max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """Decode one COCO RLE dict (``{"size": [H, W], "counts": str | list[int]}``) to (H, W) bool.

    The declared size is checked against ``max_pixels`` and the runs against the size before
    anything is allocated. Raises ``ValueError`` saying what is wrong.
    """
    problem = _rle_problem(rle)
    if problem:
        raise ValueError(problem)
    height, width = (int(v) for v in rle["size"])
    if height * width > max_pixels:
        raise ValueError(
            f"the RLE declares a {height}x{width} mask ({height * width} pixels), more than the {max_pixels} "
            "a mask may have; its size field is wrong"
        )
    counts = rle["counts"]
    runs = decode_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    negative = next((i for i, r in enumerate(runs) if r < 0), None)
    if negative is not None:
        raise ValueError(
            f"the RLE counts are damaged: run {negative} of {len(runs)} is {runs[negative]} pixels (runs are "
            "lengths, never negative)"
        )
    total = sum(runs)
    if total != height * width:
        raise ValueError(
            f"the RLE runs cover {total} pixels but its size {height}x{width} has {height * width}: the counts "
            "are damaged or belong to another size"
        )
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
    if height * width > MAX_MASK_PIXELS:
        raise ValueError(f"a {height}x{width} mask is larger than the {MAX_MASK_PIXELS} pixels a mask may have")
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

    Raises ``ValueError`` when the encoded size differs from ``(height, width)``, when a field
    has the wrong type or the size exceeds :data:`MAX_MASK_PIXELS` (before allocating).
    """
    problem = segmentation_problem(segmentation)
    if problem:
        raise ValueError(f"segmentation {problem}")
    if height * width > MAX_MASK_PIXELS:
        raise ValueError(f"a {height}x{width} mask is larger than the {MAX_MASK_PIXELS} pixels a mask may have")
    if isinstance(segmentation, Mapping):
        parts: list[Any] = [segmentation]
    elif isinstance(segmentation, Sequence) and segmentation:
        parts = list(segmentation)
    else:
        raise ValueError("empty or unrecognised COCO segmentation")
    if all(isinstance(p, Sequence) and not isinstance(p, (str, bytes)) for p in parts):
        return polygons_to_mask(parts, height, width)
    for part in parts:  # every size first: nothing is allocated for a part of the wrong size
        if not isinstance(part, Mapping):
            raise ValueError("a COCO segmentation mixes polygons and RLE dicts")
        size = tuple(int(v) for v in part["size"])
        if size != (height, width):
            raise ValueError(f"RLE size {size[0]}x{size[1]} differs from the image size {height}x{width}")
    out = np.zeros((height, width), dtype=bool)
    for part in parts:
        out |= rle_decode(part)
    return out
