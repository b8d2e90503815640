"""What every part of :mod:`uncertainty_rrsis.geo` shares: the extra's name, the errors, importing
rasterio on demand, and telling a GeoTIFF apart from its TIFF tags without rasterio."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

__all__ = ["GDAL_CACHE_MB", "GEO_EXTRA", "GeoreferenceWarning", "RasterError", "is_geotiff", "require_rasterio"]

#: How to install what this module needs.
GEO_EXTRA = 'pip install "uncertainty-rrsis[geo]"'

#: GDAL's block cache (MB) while a scene is read or written by windows (GDAL's own default is 5 % of
#: the machine's memory, which a large scene fills).
GDAL_CACHE_MB = 256

#: GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = frozenset({33550, 33922, 34264, 34735})


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


