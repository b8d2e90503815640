"""GeoTIFF in and out: read a scene (or a window of it) as the model's 8-bit RGB picture, and write
masks and uncertainty maps on the scene's own grid (extra ``geo``: ``pip install "uncertainty-rrsis[geo]"``).

Reading (:func:`read_raster`)

* **Bands** are 1-based, as in GDAL (``bands=(3, 2, 1)`` puts band 3 in the red channel). One band
  is shown as grey (repeated in the three channels). Without ``bands``: the red, green and blue
  bands when the file labels them so, else the first three bands that are not alpha, else the one
  band there is.
* **Stretch** (:class:`Stretch`): how the values of each band become 0-255. ``percentile`` (default
  for anything but 8-bit data: 2 and 98 %) maps the band's low percentile to 0 and its high
  percentile to 255; ``minmax`` maps fixed values given by the user (e.g. the statistics the
  model was trained with) to 0 and 255; ``none`` keeps 8-bit data as it is (default for 8-bit
  data). A value ``v`` becomes ``round(clip((v - lo) / (hi - lo), 0, 1) * 255)``; a band whose
  ``hi <= lo`` becomes 0. The percentiles are NumPy's (linear interpolation) over the valid
  pixels that were read, exactly up to 16,777,216 valid pixels per band and over every k-th valid
  pixel (row-major order, k the smallest step that keeps at most that many) above it, so the same
  file and window always give the same picture. The ranges that were used are in
  :attr:`RasterInfo.ranges`.
* **Nodata**: a pixel is invalid where GDAL's mask of any selected band says so (the band's
  nodata value, an alpha band or an internal mask) or, for float data, where a value is NaN or
  infinite. Invalid pixels take no part in the percentiles and are black (0) in the picture.
* **Window**: ``(col_off, row_off, width, height)`` in pixels, GDAL's ``-srcwin`` order; it must
  lie inside the scene. The outputs then cover the window, with the window's geotransform.

Writing (:func:`write_geotiff`): one band, the same CRS, geotransform, width and height as what was
read. Masks are uint8 0 / 255 (255 = the referred object) with an internal mask that marks the
nodata pixels (their value is 0); uncertainty maps are float32 ``U^p`` in [0, 1] with nodata NaN.
An input without a CRS gives outputs without georeferencing, with a :class:`GeoreferenceWarning`.

Without rasterio, :func:`is_geotiff` still tells a GeoTIFF apart (from its TIFF tags), and reading
or writing one raises an ``ImportError`` that names the extra. ``import uncertainty_rrsis.geo``
never imports rasterio.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GEO_EXTRA",
    "GeoreferenceWarning",
    "Raster",
    "RasterError",
    "RasterInfo",
    "Stretch",
    "is_geotiff",
    "parse_bands",
    "parse_window",
    "read_raster",
    "require_rasterio",
    "write_geotiff",
]

#: How to install what this module needs.
GEO_EXTRA = 'pip install "uncertainty-rrsis[geo]"'

#: GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = frozenset({33550, 33922, 34264, 34735})
_PERCENTILE_SAMPLE = 1 << 24  # valid pixels per band above which the percentiles use every k-th one
_ROWS = 512  # rows converted at a time (bounds the float temporaries)


class RasterError(ValueError):
    """A raster cannot be used as asked: unreadable or empty, a band or window out of range, a
    stretch that does not fit the data. The message names the file."""


class GeoreferenceWarning(UserWarning):
    """A georeferenced output was asked for, but the input has no CRS: it is written without one."""


def require_rasterio(what: str) -> Any:
    """Import rasterio, or raise an ``ImportError`` that says ``what`` needs it and how to install it."""
    try:
        import rasterio
    except ImportError as err:
        raise ImportError(f"{what} needs rasterio, which is not installed: {GEO_EXTRA}") from err
    return rasterio


# ------------------------------------------------------------------------------ the TIFF tags
def _tiff_tags(path: Path) -> set[int] | None:
    """The tag numbers of the first IFD of a TIFF / BigTIFF file, or None for any other file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return None
            end = "<" if head[:2] == b"II" else ">"
            version = struct.unpack(end + "H", head[2:4])[0]
            if version == 42:
                offset, count_fmt, count_size, entry = struct.unpack(end + "I", head[4:8])[0], "H", 2, 12
            elif version == 43 and len(head) >= 16:
                offset, count_fmt, count_size, entry = struct.unpack(end + "Q", head[8:16])[0], "Q", 8, 20
            else:
                return None
            fh.seek(offset)
            raw = fh.read(count_size)
            if len(raw) < count_size:
                return set()
            count = struct.unpack(end + count_fmt, raw)[0]
            table = fh.read(min(count, 4096) * entry)
    except OSError:
        return None
    return {struct.unpack(end + "H", table[i : i + 2])[0] for i in range(0, len(table) - entry + 1, entry)}


def is_geotiff(path: str | Path) -> bool:
    """True for a TIFF file with GeoTIFF georeferencing tags (read from the file's header; rasterio
    is not needed). False for other files, plain TIFFs and paths that are not files."""
    path = Path(path)
    if not path.is_file():
        return False
    tags = _tiff_tags(path)
    return bool(tags and tags & _GEO_TAGS)


# ------------------------------------------------------------------------------ the stretch
@dataclass(frozen=True)
class Stretch:
    """How each band's values become the 0-255 of the model's picture (module docstring).

    Attributes:
        kind: ``"auto"`` (``none`` for 8-bit data, else ``percentile``), ``"none"``,
            ``"percentile"`` or ``"minmax"``.
        low, high: the percentiles of ``percentile`` (default 2 and 98).
        ranges: ``minmax``: one ``(lo, hi)`` for every band, or one per selected band.

    :meth:`parse` reads the command-line form: ``auto``, ``none``, ``percentile`` (2-98),
    ``percentile:1,99``, ``minmax:0,3000`` or ``minmax:0,3000/0,2800/0,2500`` (one range per band,
    in the order of the selected bands).
    """

    kind: str = "auto"
    low: float = 2.0
    high: float = 98.0
    ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "none", "percentile", "minmax"):
            raise ValueError(f"stretch kind must be auto, none, percentile or minmax; got {self.kind!r}")
        if self.kind == "percentile" and not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"percentile stretch needs 0 <= low < high <= 100; got {self.low:g}, {self.high:g}")
        if self.kind == "minmax":
            if not self.ranges:
                raise ValueError("minmax stretch needs ranges: (lo, hi) for every band, or one per band")
            for lo, hi in self.ranges:
                if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
                    raise ValueError(f"minmax stretch range ({lo:g}, {hi:g}) must be finite with lo < hi")

    @classmethod
    def parse(cls, text: str | Stretch | None) -> Stretch:
        """A :class:`Stretch` from its command-line form (class docstring); None gives ``auto``."""
        if text is None:
            return cls()
        if isinstance(text, Stretch):
            return text
        spec = str(text).strip().lower()
        kind, _, args = spec.partition(":")
        try:
            if kind in ("auto", "none") and not args:
                return cls(kind)
            if kind == "percentile":
                if not args:
                    return cls("percentile")
                low, high = (float(v) for v in args.split(","))
                return cls("percentile", low=low, high=high)
            if kind == "minmax" and args:
                ranges = []
                for part in args.split("/"):
                    lo, hi = (float(v) for v in part.split(","))
                    ranges.append((lo, hi))
                return cls("minmax", ranges=tuple(ranges))
        except ValueError as err:
            if "stretch" in str(err):
                raise
        raise ValueError(
            f"cannot read the stretch {text!r}: use auto, none, percentile, percentile:LOW,HIGH (e.g. 2,98), "
            "minmax:LO,HI (every band) or minmax:LO1,HI1/LO2,HI2/LO3,HI3 (one range per selected band)"
        )

    def describe(self) -> str:
        """The command-line form."""
        if self.kind == "percentile":
            return f"percentile:{self.low:g},{self.high:g}"
        if self.kind == "minmax":
            return "minmax:" + "/".join(f"{lo:g},{hi:g}" for lo, hi in self.ranges)
        return self.kind


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` (or a sequence) -> ``(3, 2, 1)``: one or three 1-based band numbers."""
    if text is None:
        return None
    try:
        bands = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise ValueError(f"bands must be one or three band numbers such as 3,2,1; got {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ValueError(f"bands must be one or three band numbers (1-based, as in GDAL) such as 3,2,1; got {text!r}")
    return bands


def parse_window(text: str | Sequence[int] | None) -> tuple[int, int, int, int] | None:
    """``"col_off,row_off,width,height"`` (or a sequence) -> a 4-tuple of ints (GDAL's ``-srcwin``)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1:
        raise ValueError(f"a window is col_off,row_off,width,height in pixels (offsets >= 0, sizes >= 1); got {text!r}")
    return values


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class RasterInfo:
    """Where a picture came from, and the grid its outputs are written on.

    Attributes:
        path: the file.
        width, height: the size read (the window's, with a window).
        window: ``(col_off, row_off, width, height)``, or None for the whole scene.
        bands: the 1-based bands in the red, green and blue channels (one band: grey).
        dtype: the bands' data type (``"uint16"``, ``"float32"``, ...).
        crs: the coordinate reference system as WKT, or None when the file has none.
        transform: the affine geotransform of what was read, ``(a, b, c, d, e, f)`` as in
            ``affine.Affine`` (x = a * col + b * row + c, y = d * col + e * row + f).
        nodata: the selected bands' nodata values (None where a band has none).
        stretch: the stretch, in its command-line form (:meth:`Stretch.describe`), after ``auto``
            was resolved.
        ranges: the ``(lo, hi)`` that became 0 and 255, one per selected band; None for ``none``.
        valid_fraction: the share of pixels that are not nodata.
    """

    path: str
    width: int
    height: int
    window: tuple[int, int, int, int] | None
    bands: tuple[int, ...]
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: tuple[float | None, ...]
    stretch: str
    ranges: tuple[tuple[float, float], ...] | None
    valid_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for tables of predictions)."""
        return {
            "path": self.path, "width": self.width, "height": self.height,
            "window": list(self.window) if self.window else None, "bands": list(self.bands), "dtype": self.dtype,
            "crs": self.crs, "transform": list(self.transform), "nodata": list(self.nodata), "stretch": self.stretch,
            "ranges": [list(r) for r in self.ranges] if self.ranges else None, "valid_fraction": self.valid_fraction,
        }


@dataclass(frozen=True)
class Raster:
    """A scene read by :func:`read_raster`.

    Attributes:
        rgb: (H, W, 3) uint8, the picture the model sees (nodata pixels are 0).
        valid: (H, W) bool, False at nodata pixels; None when every pixel is valid.
        info: the :class:`RasterInfo`.
    """

    rgb: np.ndarray
    valid: np.ndarray | None
    info: RasterInfo


def _default_bands(src: Any, path: Path) -> tuple[int, ...]:
    from rasterio.enums import ColorInterp

    interp = list(src.colorinterp)
    rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
    if len(rgb) == 3:
        return tuple(rgb)
    colour = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(colour) >= 3:
        return tuple(colour[:3])
    if len(colour) == 1:
        return (colour[0],)
    raise RasterError(f"raster file {path} has {src.count} bands ({', '.join(c.name for c in interp)}); say which to "
                      "use with bands= / --bands (one band for grey, three for red, green, blue, e.g. 3,2,1)")


def _stretch_range(values: np.ndarray, stretch: Stretch, channel: int, band: int, path: Path
                   ) -> tuple[float, float]:
    if stretch.kind == "minmax":
        if len(stretch.ranges) == 1:
            return stretch.ranges[0]
        return stretch.ranges[channel]
    if values.size == 0:
        raise RasterError(f"band {band} of {path} holds only nodata pixels in the area read: nothing to stretch")
    if values.size > _PERCENTILE_SAMPLE:
        values = values[:: -(-values.size // _PERCENTILE_SAMPLE)]
    lo, hi = np.percentile(values, [stretch.low, stretch.high])
    return float(lo), float(hi)


def read_raster(
    path: str | Path,
    *,
    bands: Sequence[int] | str | None = None,
    window: Sequence[int] | str | None = None,
    stretch: Stretch | str | None = None,
) -> Raster:
    """Read a raster (GeoTIFF, or any file GDAL reads) as the model's 8-bit RGB picture.

    Args:
        path: the file.
        bands: one or three 1-based band numbers (``(3, 2, 1)`` or ``"3,2,1"``); default: module
            docstring.
        window: ``(col_off, row_off, width, height)`` in pixels, inside the scene.
        stretch: a :class:`Stretch` or its command-line form (default ``auto``).

    Raises:
        ImportError: rasterio is not installed (the message names the ``geo`` extra).
        FileNotFoundError: there is no file at ``path``.
        RasterError: the file is unreadable, empty or truncated; a band or the window is out of
            range; ``none`` was asked for data that is not 8-bit; the minmax ranges do not match
            the bands; every pixel of a band is nodata. The message names the file.
    """
    path = Path(path)
    rasterio = require_rasterio(f"reading the raster {path}")
    from affine import Affine
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    if not path.is_file():
        raise FileNotFoundError(f"raster file not found: {path}")
    stretch = Stretch.parse(stretch)
    bands = parse_bands(bands)
    window = parse_window(window)
    try:
        with warnings.catch_warnings():  # a file without georeferencing is fine to read (writing says so)
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioError as err:
        raise RasterError(f"cannot read raster file {path}: corrupt or unsupported ({err})") from err
    with src:
        if src.count < 1 or src.width < 1 or src.height < 1:
            raise RasterError(f"raster file {path} is empty ({src.width}x{src.height} pixels, {src.count} bands)")
        if bands is None:
            bands = _default_bands(src, path)
        for band in bands:
            if not 1 <= band <= src.count:
                raise RasterError(f"band {band} is out of range: {path} has {src.count} band"
                                  f"{'s' if src.count > 1 else ''} (1-{src.count})")
        if window is not None:
            col, row, width, height = window
            if col + width > src.width or row + height > src.height:
                raise RasterError(
                    f"the window col_off={col}, row_off={row}, width={width}, height={height} lies outside the "
                    f"scene of {path} ({src.width}x{src.height} pixels: columns 0-{src.width - 1}, rows "
                    f"0-{src.height - 1})"
                )
            win = Window(col, row, width, height)
        else:
            win = Window(0, 0, src.width, src.height)
        unique = sorted(set(bands))
        dtype = np.dtype(src.dtypes[unique[0] - 1])
        if stretch.kind == "minmax" and len(stretch.ranges) not in (1, len(bands)):
            raise RasterError(f"the minmax stretch of {path} has {len(stretch.ranges)} ranges for {len(bands)} "
                              "selected bands: give one range for every band, or one per band")
        kind = ("none" if dtype == np.uint8 else "percentile") if stretch.kind == "auto" else stretch.kind
        if kind == "none" and dtype != np.uint8:
            raise RasterError(f"{path} holds {dtype} data; stretch 'none' takes 8-bit data only. Use the "
                              "percentile stretch (default) or minmax:LO,HI with the values that should become 0 "
                              "and 255")
        if kind != stretch.kind:
            stretch = Stretch(kind, low=stretch.low, high=stretch.high, ranges=stretch.ranges)
        try:
            data = src.read(unique, window=win)  # (bands, h, w) in the file's type
            masks = src.read_masks(unique, window=win)
            crs = src.crs.to_wkt() if src.crs else None
            affine = src.transform @ Affine.translation(win.col_off, win.row_off)
            nodata = tuple(src.nodatavals[b - 1] for b in bands)
        except RasterioError as err:
            raise RasterError(f"cannot read raster file {path}: truncated or corrupt ({err})") from err
    height, width = data.shape[1:]
    valid = np.all(masks > 0, axis=0)
    del masks
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    all_valid = bool(valid.all())
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    ranges: list[tuple[float, float]] = []
    for channel, band in enumerate(bands if len(bands) == 3 else bands * 3):
        values = data[unique.index(band)]
        if channel >= len(bands):  # grey: channels 1 and 2 repeat channel 0
            rgb[..., channel] = rgb[..., 0]
            continue
        if kind == "none":
            rgb[..., channel] = np.where(valid, values, 0)
            continue
        lo, hi = _stretch_range(values if all_valid else values[valid], stretch, channel, band, path)
        ranges.append((lo, hi))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        for r in range(0, height, _ROWS):
            chunk = (values[r : r + _ROWS].astype(np.float64) - lo) * scale
            chunk = np.rint(np.clip(np.nan_to_num(chunk, nan=0.0, posinf=255.0, neginf=0.0), 0.0, 255.0))
            if not all_valid:
                chunk[~valid[r : r + _ROWS]] = 0.0
            rgb[r : r + _ROWS, :, channel] = chunk.astype(np.uint8)
    info = RasterInfo(
        path=str(path), width=int(width), height=int(height), window=window, bands=tuple(bands), dtype=str(dtype),
        crs=crs, transform=tuple(float(v) for v in tuple(affine)[:6]),  # type: ignore[arg-type]
        nodata=tuple(None if v is None else float(v) for v in nodata), stretch=stretch.describe(),
        ranges=tuple(ranges) if ranges else None, valid_fraction=float(valid.mean()) if valid.size else 1.0,
    )
    return Raster(rgb=rgb, valid=None if all_valid else valid, info=info)


# ------------------------------------------------------------------------------ writing
def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    info: RasterInfo | None,
    *,
    nodata: float | None = None,
    valid: np.ndarray | None = None,
    what: str = "output",
) -> Path:
    """Write one band on the grid of ``info`` (its CRS, geotransform and size).

    Args:
        path: the ``.tif`` to write (deflate-compressed, tiled when at least 256 pixels a side).
        array: (H, W) uint8 or float32, H and W equal to ``info``'s.
        info: where the input came from; None or without a CRS: the file is written without
            georeferencing, with a :class:`GeoreferenceWarning`.
        nodata: the band's nodata value (e.g. NaN for float maps).
        valid: (H, W) bool, written as the file's internal mask (False = nodata), for bands without
            a nodata value.
        what: how to name the input in the warning.
    """
    rasterio = require_rasterio(f"writing the GeoTIFF {path}")
    from affine import Affine

    path = Path(path)
    height, width = array.shape
    profile: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height, "count": 1,
                               "dtype": array.dtype.name, "compress": "deflate"}
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if info is not None and (info.width, info.height) != (width, height):
        raise ValueError(f"{path}: the map is {width}x{height} pixels but {info.path} was read at "
                         f"{info.width}x{info.height}")
    if info is not None and info.crs:
        profile.update(crs=rasterio.crs.CRS.from_wkt(info.crs), transform=Affine(*info.transform))
    else:
        source = f"{info.path} has no CRS" if info is not None else f"the {what} is not a georeferenced raster"
        warnings.warn(f"{source}: {path} is written without georeferencing (no CRS, no geotransform)",
                      GeoreferenceWarning, stacklevel=3)
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
            if valid is not None:
                dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    return path
