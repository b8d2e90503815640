"""GeoTIFF in and out: read a scene (or a window of it) as the model's 8-bit RGB picture, and write
masks and uncertainty maps on the scene's own grid (extra ``geo``: ``pip install "uncertainty-rrsis[geo]"``).

Reading (:func:`read_raster` for a scene in memory, :class:`RasterReader` for one read window by
window)

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
  pixels of the area read: all of them up to 16,777,216 pixels, and above that those of every
  k-th row and column (k the smallest step that keeps at most that many), so the same file and
  window always give the same picture, read whole or by windows. The ranges that were used are
  in :attr:`RasterInfo.ranges`.
* **Nodata**: a pixel is invalid where GDAL's mask of any selected band says so (the band's
  nodata value, an alpha band or an internal mask) or, for float data, where a value is NaN or
  infinite. Invalid pixels take no part in the percentiles and are black (0) in the picture.
* **Window**: ``(col_off, row_off, width, height)`` in pixels, GDAL's ``-srcwin`` order; it must
  lie inside the scene. The outputs then cover the window, with the window's geotransform.

Writing (:func:`write_geotiff` for a map in memory, :class:`GeoTiffWriter` for one written band
of rows at a time): one band, the same CRS, geotransform, width and height as what was read.
Masks are uint8 0 / 255 (255 = the referred object) with an internal mask that marks the nodata
pixels (their value is 0); uncertainty maps are float32 ``U^p`` in [0, 1] with nodata NaN.
An input without a CRS gives outputs without georeferencing, with a :class:`GeoreferenceWarning`.

Without rasterio, :func:`is_geotiff` still tells a GeoTIFF apart (from its TIFF tags), and reading
or writing one raises an ``ImportError`` that names the extra. ``import uncertainty_rrsis.geo``
never imports rasterio.

Memory: :class:`RasterReader` holds one window (or one band of rows) of the file at a time, and
GDAL's block cache is capped while it reads (:data:`GDAL_CACHE_MB`); a scene larger than memory
is read in pieces (:meth:`RasterReader.read`, :meth:`RasterReader.overview`).
"""

from ._common import GDAL_CACHE_MB, GEO_EXTRA, GeoreferenceWarning, RasterError, is_geotiff, require_rasterio
from .read import Raster, RasterInfo, RasterReader, read_raster
from .stretch import Stretch, parse_bands, parse_window
from .write import GeoTiffWriter, write_geotiff

__all__ = [
    "GDAL_CACHE_MB",
    "GEO_EXTRA",
    "GeoTiffWriter",
    "GeoreferenceWarning",
    "Raster",
    "RasterError",
    "RasterInfo",
    "RasterReader",
    "Stretch",
    "is_geotiff",
    "parse_bands",
    "parse_window",
    "read_raster",
    "require_rasterio",
    "write_geotiff",
]
