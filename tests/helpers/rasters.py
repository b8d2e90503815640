"""GeoTIFFs written by the tests themselves: a UTM grid of 10 m pixels, 16-bit bands."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

CRS = "EPSG:32633"
ORIGIN = (500000.0, 4100000.0)


def write_raster(path, data, *, crs=CRS, nodata=None, pixel=10.0, colorinterp=None):
    """A GeoTIFF of ``data`` (bands, H, W) with a UTM CRS and 10 m pixels (no CRS when ``crs`` is None)."""
    rasterio = pytest.importorskip("rasterio")
    data = np.asarray(data)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": grid(pixel=pixel)}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
    return path


def grid(dx=0.0, dy=0.0, pixel=10.0):
    """The scene's geotransform, moved by (dx, dy) metres."""
    from affine import Affine

    return Affine(pixel, 0.0, ORIGIN[0] + dx, 0.0, -pixel, ORIGIN[1] + dy)


def uint16_scene(height=40, width=56, bands=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((bands, height, width)) * 3000 + 200 * np.arange(1, bands + 1)[:, None, None]).astype(np.uint16)
