"""Image and mask file readers that name the offending file in every error.

Decoding is strict: a file is read in full and must decode without error, and a wrong
picture is never returned silently.

* **Truncated or corrupt files** raise. Pillow decodes a JPEG whose compressed data is
  damaged without an error (libjpeg only warns, and Pillow drops the warning), so the
  compressed data of every baseline JPEG is checked first (:mod:`._jpeg`). Given a record of
  checked files (:class:`~._checked.CheckedFiles`), a file that passed once and has not changed
  since (same size and modification time) is not checked again.
* **8-bit pictures** (RGB, grey, palette, with or without alpha, CMYK, YCbCr) are converted
  to RGB as before (alpha is dropped, grey is repeated in three channels).
* **16-bit and 32-bit integer pictures are refused** with a message that says how to convert
  them: how such values map to 8 bits depends on the sensor (12-bit data stored in 16 bits,
  scaled reflectances), and a fixed rule would silently darken or wash out the picture.
* **Float pictures** (Pillow mode ``F``, one channel) are read as intensities in [0, 1]:
  ``round(value * 255)`` in each of the three channels. Values outside [0, 1], NaN or
  infinity are refused.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._checked import CheckedFiles
from ._errors import SampleError
from ._jpeg import JpegDataError, verify_jpeg

__all__ = ["read_image", "read_mask_file", "image_to_rgb", "mask_value_range", "DEFAULT_MAX_PIXELS"]

_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)

#: Pillow modes of 8-bit pictures, converted to RGB with ``Image.convert``.
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
#: Pillow modes of integer pictures with more than 8 bits per sample.
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

_CONVERT_WIDE = (
    "the readers take 8-bit pictures only, because how such values map to 8 bits depends on the "
    "sensor (12-bit data stored in 16 bits, scaled reflectances, ...). Convert it once to an 8-bit "
    "RGB PNG with the white level of your data, e.g. `gdal_translate -ot Byte -scale 0 WHITE 0 255 "
    "SRC DST.png`, or in numpy `np.clip(a / WHITE * 255 + 0.5, 0, 255).astype(np.uint8)` on the "
    "16-bit array (read with tifffile, OpenCV's IMREAD_UNCHANGED or GDAL: Pillow reads 16-bit "
    "colour as 8 bits), WHITE being the value that should become 255 (4095 for 12-bit data, "
    "65535 for full-range 16-bit data)"
)
_CONVERT_FLOAT = (
    "float pictures are read as intensities in [0, 1] (value x 255, rounded); rescale it to "
    "[0, 1] or save it as an 8-bit RGB PNG"
)


def _bits_per_sample(img: Image.Image, data: bytes) -> int:
    """Bits per sample stored in the file (Pillow reduces 16-bit colour to 8 bits on load)."""
    if img.format == "PNG" and len(data) > 24:
        return int(data[24])  # IHDR bit depth
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        if bits:
            return max(bits) if isinstance(bits, tuple) else int(bits)
    if img.mode in _WIDE_INT_MODES:
        return 32 if img.mode == "I" else 16
    return 8


#: The largest number of pixels an image is decoded at (after a JPEG's reduced-scale decode): about 4.5 GB
#: of peak memory for a prediction at the image's size. Larger files are refused before they are decoded.
DEFAULT_MAX_PIXELS = 100_000_000


def _decode(path: Path, what: str, layout: str | None, *, verify: bool, min_size: tuple[int, int] | None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, checked: CheckedFiles | None = None
            ) -> tuple[Image.Image, int]:
    """Open, check and fully decode ``path``; returns the image and the file's bits per sample."""
    if not path.is_file():
        where = f"\nExpected layout:\n{layout}" if layout else ""
        raise SampleError(f"{what} file not found: {path}{where}")
    try:
        key = CheckedFiles.key(path) if verify and checked is not None else None  # before reading: a change after
        data = path.read_bytes()  # this moment gives the file another key
    except OSError as exc:
        raise SampleError(f"cannot read {what} file {path}: {exc}") from exc
    if verify and data[:2] == b"\xff\xd8" and not (key is not None and key in checked):  # type: ignore[operator]
        try:
            if verify_jpeg(data) is None and key is not None:
                checked.add(key)  # type: ignore[union-attr]
        except JpegDataError as exc:
            raise SampleError(
                f"corrupt {what} file {path}: its JPEG data is damaged ({exc}); Pillow would decode it "
                "without an error but with wrong pixels. Replace it with an intact copy (download or "
                "export it again)"
            ) from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            bits = _bits_per_sample(img, data)
            full_size = img.size
            if min_size is not None and img.format == "JPEG":
                img.draft(None, (int(min_size[1]), int(min_size[0])))
            width, height = img.size  # what would be decoded (a JPEG's reduced size after draft)
            if max_pixels is not None and width * height > max_pixels:
                raise SampleError(
                    f"{what} file {path} declares {full_size[0]} x {full_size[1]} pixels; decoding it "
                    f"({width} x {height} = {width * height:,} pixels) would exceed the pixel budget of "
                    f"{max_pixels:,} (about {width * height * 45 / 1e9:.1f} GB to predict at that size). Shrink "
                    "the image, read it as a GeoTIFF (by windows), or raise the budget (max_pixels=..., "
                    "predict.py --max-pixels)"
                )
            img.load()
            out = img.copy()
    except _READ_ERRORS as exc:
        hint = ""
        if isinstance(exc, UnidentifiedImageError) and data[:4] in (b"II*\x00", b"MM\x00*"):
            hint = ("; Pillow does not read this TIFF variant (multi-band float or other layouts): "
                    "save it as an 8-bit RGB PNG or TIFF")
        raise SampleError(f"cannot read {what} file {path}: corrupt or unsupported ({exc}){hint}") from exc
    if out.size != full_size:
        out.info["full_size"] = full_size
    return out, bits


def image_to_rgb(img: Image.Image, *, source: str = "image", bits: int = 8) -> Image.Image:
    """Bring a decoded picture to 8-bit RGB by the rules of :func:`read_image`.

    Args:
        img: a PIL image of any mode.
        source: how to name it in errors (a file path, ``"image 2"``).
        bits: bits per sample of the file it came from (16 for a 16-bit PNG that Pillow has
            already reduced to mode ``RGB``).

    Raises:
        SampleError (a ``ValueError``): a 16/32-bit integer picture, a float picture with values
            outside [0, 1] or not finite, or a mode the readers do not take; the message says
            how to convert it.
    """
    mode = img.mode
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise SampleError(
                f"{source} has {bad} NaN or infinite pixel(s) (float picture, {img.width}x{img.height}); "
                "fill or mask them and save the picture as 8-bit RGB"
            )
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise SampleError(f"{source} is a float picture with values from {low:g} to {high:g}; {_CONVERT_FLOAT}")
        grey = np.rint(arr * 255.0).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if mode in _WIDE_INT_MODES or bits > 8:
        depth = bits if bits > 8 else (32 if mode == "I" else 16)
        raise SampleError(f"{source} has {depth} bits per sample (Pillow mode {mode}); {_CONVERT_WIDE}")
    if mode not in _EIGHT_BIT_MODES:
        raise SampleError(
            f"{source} has Pillow mode {mode!r}, which the readers do not take; save it as an 8-bit RGB "
            "PNG or JPEG"
        )
    return img if mode == "RGB" else img.convert("RGB")


def read_image(
    path: str | Path,
    *,
    layout: str | None = None,
    verify: bool = True,
    min_size: tuple[int, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    checked: CheckedFiles | None = None,
) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image (size W x H), strictly.

    Args:
        path: the image file (PNG, JPEG, TIFF, ... : what Pillow reads).
        layout: the expected folder layout, quoted in the error when the file is missing.
        verify: check the compressed data of baseline JPEGs before decoding (see the module
            docstring). About 0.1-0.2 s per MB of JPEG data; off, a damaged JPEG decodes to a wrong
            picture without an error.
        min_size: ``(height, width)``: decode a JPEG at a reduced scale (1/2, 1/4 or 1/8, libjpeg's
            DCT scaling) as long as the result stays at least this large; the file's own size is
            then in ``image.info["full_size"]`` as ``(width, height)``. Other formats, and JPEGs
            smaller than twice ``min_size``, are decoded at their own size.
        max_pixels: refuse, before decoding, a file that would decode to more pixels than this
            (:data:`DEFAULT_MAX_PIXELS`; None: no limit). A small file can declare a huge size (a
            PNG of 140 KB can hold 12,000 x 12,000 pixels, 6 GB to predict on).
        checked: a record of files that passed the check (:class:`~uncertainty_rrsis.data.CheckedFiles`):
            a recorded file with the same size and modification time is not checked again, and a
            file that passes is recorded. None: every read checks.

    Raises:
        SampleError: the file is missing, truncated, corrupt or unsupported, or has 16-bit,
            32-bit or out-of-range float pixels; the message names the file and says what to do.
    """
    path = Path(path)
    img, bits = _decode(path, "image", layout, verify=verify, min_size=min_size, max_pixels=max_pixels,
                        checked=checked)
    out = image_to_rgb(img, source=f"image file {path}", bits=bits)
    if "full_size" in img.info:
        out.info["full_size"] = img.info["full_size"]
    return out


def _mask_array(path: Path, layout: str, verify: bool, checked: CheckedFiles | None = None) -> np.ndarray:
    img, bits = _decode(path, "mask", layout, verify=verify, min_size=None, checked=checked)
    mode = img.mode
    if bits > 8 and mode not in _WIDE_INT_MODES:
        raise SampleError(
            f"mask file {path} stores {bits}-bit colour, which Pillow reads as its high byte only; save "
            "masks as one-channel 8-bit PNG or TIFF (0 / 255)"
        )
    if mode in ("P", "PA", "1"):
        img = img.convert("L")
    elif mode in ("LA", "RGBA", "La", "RGBa", "RGBX"):
        img = img.convert(mode[:-1] if mode != "RGBX" else "RGB")
    elif mode not in ("L", "RGB", "F") and mode not in _WIDE_INT_MODES:
        raise SampleError(f"mask file {path} has Pillow mode {mode!r}; save masks as 8-bit PNG or TIFF (0 / 255)")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise SampleError(f"mask file {path} has an unsupported shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise SampleError(f"mask file {path} holds NaN or infinite values; save masks as 8-bit PNG or TIFF (0 / 255)")
    return arr


def read_mask_file(path: Path, *, threshold: int, layout: str, verify: bool = True,
                   checked: CheckedFiles | None = None) -> np.ndarray:
    """Read a mask image as (H, W) bool: ``value > threshold`` on channel 0.

    8-bit masks of any mode Pillow converts to grey or RGB, one-channel 16/32-bit integer
    masks (compared as stored) and finite float masks are read; 16-bit colour masks (Pillow
    keeps only their high byte) and NaN are refused. ``verify`` and ``checked``: as for :func:`read_image`.
    """
    return _mask_array(path, layout, verify, checked) > threshold


def mask_value_range(path: Path, *, layout: str) -> tuple[Any, Any]:
    """(smallest, largest) value on channel 0 of a mask file, as stored (for error messages)."""
    arr = _mask_array(path, layout, verify=False)
    return (arr.min().item(), arr.max().item()) if arr.size else (0, 0)
