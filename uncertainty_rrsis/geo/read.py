"""Reading rasters as the model's 8-bit RGB picture: whole (:func:`read_raster`) or window by window
(:class:`RasterReader`), by the rules of :mod:`uncertainty_rrsis.geo`."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._common import GDAL_CACHE_MB, RasterError, require_rasterio
from .stretch import Stretch, parse_bands, parse_window

__all__ = ["Raster", "RasterInfo", "RasterReader", "read_raster"]

_PERCENTILE_SAMPLE = 1 << 24  # pixels per band above which the percentiles use every k-th row and column
_ROWS = 512  # rows converted (or read, for the statistics) at a time: bounds the temporaries


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
        valid_fraction: the share of pixels that are not nodata (of the statistics' sample when the
            area has more than 16,777,216 pixels).
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


def sample_step(height: int, width: int) -> int:
    """The statistics' step k: every k-th row and column, the smallest k that keeps at most 16,777,216 pixels."""
    k = max(1, math.isqrt(max(0, height * width - 1) // _PERCENTILE_SAMPLE))
    while math.ceil(height / k) * math.ceil(width / k) > _PERCENTILE_SAMPLE:
        k += 1
    return k


class RasterReader:
    """A raster opened once and read window by window as the model's 8-bit RGB picture.

    The bands, the stretch and the nodata rules are those of :mod:`uncertainty_rrsis.geo`; a
    ``percentile`` stretch takes its ranges from the whole area (the window, or the scene) when the
    reader opens, so every window gets the picture it would have in a whole read.
    :func:`read_raster` reads through this class. Use it as a context manager (or :meth:`close` it).

    Args:
        path: the file.
        bands: one or three 1-based band numbers (``(3, 2, 1)`` or ``"3,2,1"``).
        window: ``(col_off, row_off, width, height)`` in pixels, inside the scene: the area read.
        stretch: a :class:`Stretch` or its command-line form (default ``auto``).

    Attributes:
        info: the :class:`RasterInfo` of the area (its outputs' grid).
        size: the area's ``(H, W)``.
        may_have_nodata: False when the file says every pixel of the selected bands is valid (no
            nodata value, alpha band or mask, and integer data).

    Raises:
        ImportError: rasterio is not installed (the message names the ``geo`` extra).
        FileNotFoundError: there is no file at ``path``.
        RasterError: as :func:`read_raster`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        bands: Sequence[int] | str | None = None,
        window: Sequence[int] | str | None = None,
        stretch: Stretch | str | None = None,
    ) -> None:
        self.path = path = Path(path)
        rasterio = self._rasterio = require_rasterio(f"reading the raster {path}")
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        if not path.is_file():
            raise FileNotFoundError(f"raster file not found: {path}")
        stretch = Stretch.parse(stretch)
        parsed_bands = parse_bands(bands)
        area = parse_window(window)
        try:
            with self._env(), warnings.catch_warnings():  # a file without georeferencing is fine to read
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._src = rasterio.open(path)
        except RasterioError as err:
            raise RasterError(f"cannot read raster file {path}: corrupt or unsupported ({err})") from err
        try:
            src = self._src
            if src.count < 1 or src.width < 1 or src.height < 1:
                raise RasterError(f"raster file {path} is empty ({src.width}x{src.height} pixels, {src.count} bands)")
            chosen = parsed_bands if parsed_bands is not None else _default_bands(src, path)
            for band in chosen:
                if not 1 <= band <= src.count:
                    raise RasterError(f"band {band} is out of range: {path} has {src.count} band"
                                      f"{'s' if src.count > 1 else ''} (1-{src.count})")
            if area is not None:
                col, row, width, height = area
                if col + width > src.width or row + height > src.height:
                    raise RasterError(
                        f"the window col_off={col}, row_off={row}, width={width}, height={height} lies outside the "
                        f"scene of {path} ({src.width}x{src.height} pixels: columns 0-{src.width - 1}, rows "
                        f"0-{src.height - 1})"
                    )
                self._col, self._row, self.width, self.height = col, row, width, height
            else:
                self._col, self._row, self.width, self.height = 0, 0, src.width, src.height
            self.bands = tuple(chosen)
            self._unique = sorted(set(self.bands))
            dtype = np.dtype(src.dtypes[self._unique[0] - 1])
            if stretch.kind == "minmax" and len(stretch.ranges) not in (1, len(self.bands)):
                raise RasterError(f"the minmax stretch of {path} has {len(stretch.ranges)} ranges for "
                                  f"{len(self.bands)} selected bands: give one range for every band, or one per band")
            kind = ("none" if dtype == np.uint8 else "percentile") if stretch.kind == "auto" else stretch.kind
            if kind == "none" and dtype != np.uint8:
                raise RasterError(f"{path} holds {dtype} data; stretch 'none' takes 8-bit data only. Use the "
                                  "percentile stretch (default) or minmax:LO,HI with the values that should become 0 "
                                  "and 255")
            if kind != stretch.kind:
                stretch = Stretch(kind, low=stretch.low, high=stretch.high, ranges=stretch.ranges)
            self.stretch = stretch
            self._float = dtype.kind == "f"
            from rasterio.enums import MaskFlags

            self.may_have_nodata = self._float or any(  # else every pixel is valid (no mask, nodata or alpha)
                src.mask_flag_enums[b - 1] != [MaskFlags.all_valid] for b in self._unique)
            try:
                crs = src.crs.to_wkt() if src.crs else None
                with warnings.catch_warnings():  # rasterio's own use of affine's `*` (a pending deprecation)
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    affine = src.window_transform(Window(self._col, self._row, self.width, self.height))
                nodata = tuple(src.nodatavals[b - 1] for b in self.bands)
            except RasterioError as err:
                raise RasterError(f"cannot read raster file {path}: corrupt ({err})") from err
            ranges, valid_fraction = self._statistics()
            self.ranges = ranges
            self.info = RasterInfo(
                path=str(path), width=int(self.width), height=int(self.height), window=area, bands=self.bands,
                dtype=str(dtype), crs=crs, transform=tuple(float(v) for v in tuple(affine)[:6]),  # type: ignore[arg-type]
                nodata=tuple(None if v is None else float(v) for v in nodata), stretch=stretch.describe(),
                ranges=ranges, valid_fraction=valid_fraction,
            )
        except BaseException:
            self._src.close()
            raise

    # ------------------------------------------------------------------ opening and closing
    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _env(self) -> Any:
        """GDAL's block cache capped while this reader works (:data:`~uncertainty_rrsis.geo.GDAL_CACHE_MB`)."""
        return self._rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * (1 << 20))

    # ------------------------------------------------------------------ reading
    def _raw(self, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(the selected bands' values (bands, h, w) in the file's type, valid (h, w) bool) of an area window."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        win = Window(self._col + x, self._row + y, w, h)
        try:
            with self._env():
                data = self._src.read(self._unique, window=win)
                if self.may_have_nodata:
                    valid = np.all(self._src.read_masks(self._unique, window=win) > 0, axis=0)
                else:  # the file says every pixel is valid: no masks to read
                    valid = np.ones((h, w), dtype=bool)
        except RasterioError as err:
            raise RasterError(f"cannot read raster file {self.path}: truncated or corrupt ({err})") from err
        if self._float:
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def _statistics(self) -> tuple[tuple[tuple[float, float], ...] | None, float]:
        """The stretch's ranges (module docstring) and the valid share, read in bands of rows."""
        kind = self.stretch.kind
        k = sample_step(self.height, self.width)
        step_rows = max(k, (_ROWS // k) * k)
        samples: list[list[np.ndarray]] = [[] for _ in self._unique]
        valid_count = total = 0
        need_values = kind == "percentile"
        for y in range(0, self.height, step_rows):
            h = min(step_rows, self.height - y)
            data, valid = self._raw(y, 0, h, self.width)
            data, valid = data[:, ::k, ::k], valid[::k, ::k]  # y is a multiple of k: rows 0, k, 2k, ... of the area
            valid_count += int(valid.sum())
            total += valid.size
            if need_values:
                for i in range(len(self._unique)):
                    samples[i].append(data[i][valid])
        valid_fraction = valid_count / total if total else 1.0
        if kind == "none":
            return None, valid_fraction
        ranges = []
        for channel, band in enumerate(self.bands):
            if kind == "minmax":
                ranges.append(self.stretch.ranges[0] if len(self.stretch.ranges) == 1 else self.stretch.ranges[channel])
                continue
            values = np.concatenate(samples[self._unique.index(band)])
            if values.size == 0:
                raise RasterError(f"band {band} of {self.path} holds only nodata pixels in the area read: nothing "
                                  "to stretch")
            lo, hi = np.percentile(values, [self.stretch.low, self.stretch.high])
            ranges.append((float(lo), float(hi)))
        return tuple(ranges), valid_fraction

    def read(self, y: int = 0, x: int = 0, height: int | None = None, width: int | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """The picture of rows ``y .. y + height`` and columns ``x .. x + width`` of the area (default: all of it).

        Returns:
            (height, width, 3) uint8 (nodata pixels 0), and (height, width) bool valid (None when
            every pixel of the window is valid).
        """
        height = self.height - y if height is None else height
        width = self.width - x if width is None else width
        if y < 0 or x < 0 or height < 1 or width < 1 or y + height > self.height or x + width > self.width:
            raise RasterError(f"rows {y}..{y + height} and columns {x}..{x + width} are outside the {self.width}x"
                              f"{self.height} area read from {self.path}")
        data, valid = self._raw(y, x, height, width)
        all_valid = bool(valid.all())
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
        for channel, band in enumerate(self.bands if len(self.bands) == 3 else self.bands * 3):
            if channel >= len(self.bands):  # grey: channels 1 and 2 repeat channel 0
                rgb[..., channel] = rgb[..., 0]
                continue
            values = data[self._unique.index(band)]
            if self.ranges is None:  # 8-bit data as it is
                rgb[..., channel] = np.where(valid, values, 0)
                continue
            lo, hi = self.ranges[channel]
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            for r in range(0, height, _ROWS):
                chunk = (values[r : r + _ROWS].astype(np.float64) - lo) * scale
                chunk = np.rint(np.clip(np.nan_to_num(chunk, nan=0.0, posinf=255.0, neginf=0.0), 0.0, 255.0))
                if not all_valid:
                    chunk[~valid[r : r + _ROWS]] = 0.0
                rgb[r : r + _ROWS, :, channel] = chunk.astype(np.uint8)
        return rgb, None if all_valid else valid

    def valid(self, y: int, x: int, height: int, width: int) -> np.ndarray | None:
        """(height, width) bool, False at the nodata pixels of a window (None when all are valid)."""
        if not self.may_have_nodata:
            return None
        valid = self._raw(y, x, height, width)[1]
        return None if bool(valid.all()) else valid

    def rows(self, step: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(y, picture, valid)`` of the area in bands of ``step`` rows, top to bottom (:meth:`read`)."""
        for y in range(0, self.height, step):
            yield (y, *self.read(y, 0, min(step, self.height - y), self.width))

    def overview(self, max_pixels: int) -> tuple[np.ndarray, int]:
        """The whole area as a picture of at most ``max_pixels`` pixels, read in bands of rows.

        Returns ``(picture, k)``: (ceil(H / k), ceil(W / k), 3) uint8, each pixel the mean of a k x k
        block of the picture (:meth:`read`; blocks at the right and bottom edges may be smaller), k
        the smallest factor that fits. ``k = 1`` is the picture itself.
        """
        k = 1
        while math.ceil(self.height / k) * math.ceil(self.width / k) > max_pixels:
            k += 1
        if k == 1:
            return self.read()[0], 1
        out = np.empty((math.ceil(self.height / k), math.ceil(self.width / k), 3), dtype=np.uint8)
        cols = np.arange(0, self.width, k)
        widths = np.diff(np.append(cols, self.width))
        for y, picture, _ in self.rows(max(k, (_ROWS // k) * k)):
            starts = np.arange(0, picture.shape[0], k)
            heights = np.diff(np.append(starts, picture.shape[0]))
            sums = np.add.reduceat(np.add.reduceat(picture.astype(np.float64), starts, axis=0), cols, axis=1)
            block = sums / (heights[:, None, None] * widths[None, :, None])
            out[y // k : y // k + len(starts)] = np.rint(block).astype(np.uint8)
        return out, k


def read_raster(
    path: str | Path,
    *,
    bands: Sequence[int] | str | None = None,
    window: Sequence[int] | str | None = None,
    stretch: Stretch | str | None = None,
) -> Raster:
    """Read a raster (GeoTIFF, or any file GDAL reads) as the model's 8-bit RGB picture, whole.

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
    with RasterReader(path, bands=bands, window=window, stretch=stretch) as reader:
        rgb, valid = reader.read()
        info = reader.info
    share = 1.0 if valid is None else float(valid.mean())  # exact: every pixel was read
    return Raster(rgb=rgb, valid=valid, info=dataclasses.replace(info, valid_fraction=share))
