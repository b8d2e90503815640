"""Writing one-band maps on the grid of what was read: whole (:func:`write_geotiff`) or a band of rows at a
time (:class:`GeoTiffWriter`), by the rules of :mod:`uncertainty_rrsis.geo`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._common import GDAL_CACHE_MB, GeoreferenceWarning, require_rasterio
from .read import RasterInfo

__all__ = ["GeoTiffWriter", "write_geotiff"]


class GeoTiffWriter:
    """A one-band GeoTIFF on the grid of ``info`` (its CRS, geotransform and size), written band of rows by
    band of rows (:meth:`write`), so a map larger than memory never has to exist whole.

    The file is deflate-compressed and tiled (256 x 256) when at least 256 pixels a side. Use it as a
    context manager; the file is complete once it is closed.

    Args:
        path: the ``.tif`` to write (its folder is created).
        info: where the input came from, or None; without a CRS the file is written without
            georeferencing, with a :class:`~uncertainty_rrsis.geo.GeoreferenceWarning`.
        dtype: the band's type (``"uint8"``, ``"float32"``).
        size: ``(H, W)`` when ``info`` is None (default: ``info``'s size).
        nodata: the band's nodata value (e.g. NaN for float maps).
        with_mask: write an internal mask (False = nodata) from :meth:`write`'s ``valid``, for bands
            without a nodata value.
        what: how to name the input in the warning.
    """

    def __init__(self, path: str | Path, info: RasterInfo | None, *, dtype: str, size: tuple[int, int] | None = None,
                 nodata: float | None = None, with_mask: bool = False, what: str = "output") -> None:
        rasterio = self._rasterio = require_rasterio(f"writing the GeoTIFF {path}")
        from rasterio.transform import Affine

        self.path = Path(path)
        if size is None:
            if info is None:
                raise ValueError(f"{self.path}: give the map's size when there is no raster to take it from")
            size = (info.height, info.width)
        elif info is not None and (info.height, info.width) != tuple(size):
            raise ValueError(f"{self.path}: the map is {size[1]}x{size[0]} pixels but {info.path} was read at "
                             f"{info.width}x{info.height}")
        self.height, self.width = int(size[0]), int(size[1])
        profile: dict[str, Any] = {"driver": "GTiff", "width": self.width, "height": self.height, "count": 1,
                                   "dtype": np.dtype(dtype).name, "compress": "deflate"}
        if self.width >= 256 and self.height >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        if info is not None and info.crs:
            profile.update(crs=rasterio.crs.CRS.from_wkt(info.crs), transform=Affine(*info.transform))
        else:
            source = f"{info.path} has no CRS" if info is not None else f"the {what} is not a georeferenced raster"
            warnings.warn(f"{source}: {self.path} is written without georeferencing (no CRS, no geotransform)",
                          GeoreferenceWarning, stacklevel=3)
        if nodata is not None:
            profile["nodata"] = nodata
        self.with_mask = bool(with_mask)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dst = rasterio.open(self.path, "w", **profile)

    def _env(self) -> Any:
        return self._rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * (1 << 20))

    def write(self, y: int, rows: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write ``rows`` (r, W) at rows ``y .. y + r``; ``valid`` (r, W) bool marks the nodata pixels (False)
        in the internal mask (with ``with_mask``; None: all valid)."""
        from rasterio.windows import Window

        if rows.ndim != 2 or rows.shape[1] != self.width or y < 0 or y + rows.shape[0] > self.height:
            raise ValueError(f"{self.path}: rows {y}..{y + rows.shape[0]} of width {rows.shape[-1]} do not fit a "
                             f"{self.width}x{self.height} map")
        window = Window(0, y, self.width, rows.shape[0])
        with self._env():
            self._dst.write(rows, 1, window=window)
            if self.with_mask:
                mask = np.full(rows.shape, 255, np.uint8) if valid is None else np.where(valid, 255, 0).astype(np.uint8)
                self._dst.write_mask(mask, window=window)

    def close(self) -> None:
        with self._env():
            self._dst.close()

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    with GeoTiffWriter(path, info, dtype=array.dtype.name, size=array.shape, nodata=nodata,
                       with_mask=valid is not None, what=what) as writer:
        writer.write(0, array, valid)
    return writer.path
