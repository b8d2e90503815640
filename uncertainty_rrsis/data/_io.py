"""Image and mask file readers that name the offending file in every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._errors import SampleError

__all__ = ["read_image", "read_mask"]

_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def _open(path: Path, what: str, layout: str | None) -> Image.Image:
    if not path.is_file():
        where = f"\nExpected layout:\n{layout}" if layout else ""
        raise SampleError(f"{what} file not found: {path}{where}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except _READ_ERRORS as exc:
        raise SampleError(f"cannot read {what} file {path}: corrupt or unsupported ({exc})") from exc


def read_image(path: str | Path, *, layout: str | None = None) -> Image.Image:
    """Open an image file as an RGB PIL image (size W x H).

    Args:
        path: the image file (anything PIL reads: PNG, JPEG, TIFF, ...).
        layout: the expected folder layout, quoted in the error when the file is missing.

    Raises:
        SampleError: the file is missing, corrupt or unsupported (the message names it).
    """
    img = _open(Path(path), "image", layout)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def read_mask(path: Path, *, threshold: int, layout: str) -> np.ndarray:
    """Read a mask image as (H, W) bool: ``value > threshold`` on channel 0."""
    img = _open(path, "mask", layout)
    if img.mode in ("P", "PA", "LA", "RGBA", "1"):
        img = img.convert("L") if img.mode in ("P", "PA", "1") else img.convert(img.mode[:-1])
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise SampleError(f"mask file {path} has an unsupported shape {arr.shape}")
    return arr > threshold
