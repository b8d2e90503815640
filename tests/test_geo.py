"""GeoTIFF in and out: bands, stretch, nodata, windows, georeferenced outputs, and the errors that name
the file. Rasters are written by the tests themselves; everything that needs rasterio skips without it."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from uncertainty_rrsis import geo
from uncertainty_rrsis.geo import RasterError, Stretch, is_geotiff, parse_bands, parse_window

from helpers.rasters import ORIGIN, grid, uint16_scene, write_raster
from helpers.tiny import perturbed_model


# ------------------------------------------------------------------------------ without rasterio
def test_geotiff_is_told_apart_from_its_tags(tmp_path):
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[33550] = (10.0, 10.0, 0.0)  # ModelPixelScale
    ifd.tagtype[33550] = 12
    picture = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(picture).save(tmp_path / "geo.tif", tiffinfo=ifd)
    Image.fromarray(picture).save(tmp_path / "plain.tif")
    Image.fromarray(picture).save(tmp_path / "plain.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00\xff\xff\xff\xff")
    assert is_geotiff(tmp_path / "geo.tif")
    assert not any(is_geotiff(tmp_path / n) for n in ("plain.tif", "plain.png", "junk.tif", "missing.tif"))


def test_geotiff_without_rasterio_names_the_extra(tmp_path, monkeypatch, tiny_config, tiny_tokenizer):
    pytest.importorskip("timm")
    from uncertainty_rrsis.inference import ReferringSegmenter
    from uncertainty_rrsis.models import CroBIMU

    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[33550] = (10.0, 10.0, 0.0)
    ifd.tagtype[33550] = 12
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "scene.tif", tiffinfo=ifd)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "picture.png")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio -> ImportError
    segmenter = ReferringSegmenter(CroBIMU(tiny_config).eval(), tiny_tokenizer)
    with pytest.raises(ImportError, match=r'scene\.tif is a GeoTIFF.*pip install "uncertainty-rrsis\[geo\]"'):
        segmenter(str(tmp_path / "scene.tif"), "the road")
    pred = segmenter(str(tmp_path / "picture.png"), "the road")  # pictures keep working
    assert tuple(pred.mask.shape) == (20, 20) and pred.raster is None
    with pytest.raises(ImportError, match=r"uncertainty-rrsis\[geo\]"):
        geo.read_raster(tmp_path / "scene.tif")


def test_stretch_and_option_parsing():
    assert Stretch.parse(None) == Stretch() and Stretch.parse("auto").kind == "auto"
    assert Stretch.parse("percentile") == Stretch("percentile", low=2.0, high=98.0)
    assert Stretch.parse("percentile:1,99.5") == Stretch("percentile", low=1.0, high=99.5)
    assert Stretch.parse("minmax:0,3000").ranges == ((0.0, 3000.0),)
    assert Stretch.parse("minmax:0,3000/10,2800/-5,2500").ranges == ((0, 3000), (10, 2800), (-5, 2500))
    assert Stretch.parse("minmax:0,3000/10,2800").describe() == "minmax:0,3000/10,2800"
    for bad in ("percentile:98,2", "minmax:5,5", "minmax", "gamma", "percentile:1"):
        with pytest.raises(ValueError, match="stretch"):
            Stretch.parse(bad)
    assert parse_bands("3,2,1") == (3, 2, 1) and parse_bands([2]) == (2,) and parse_bands(None) is None
    for bad in ("0,1,2", "1,2", "a"):
        with pytest.raises(ValueError, match="band"):
            parse_bands(bad)
    assert parse_window("0,8,16,24") == (0, 8, 16, 24)
    with pytest.raises(ValueError, match="col_off,row_off,width,height"):
        parse_window("0,0,0,5")


# ------------------------------------------------------------------------------ reading
def test_percentile_stretch_of_16_bit_bands(tmp_path):
    data = uint16_scene()
    path = write_raster(tmp_path / "scene.tif", data)
    raster = geo.read_raster(path, bands="3,2,1")
    assert raster.rgb.shape == (40, 56, 3) and raster.rgb.dtype == np.uint8 and raster.valid is None
    info = raster.info
    assert info.bands == (3, 2, 1) and info.dtype == "uint16" and info.stretch == "percentile:2,98"
    for channel, band in enumerate((3, 2, 1)):
        lo, hi = np.percentile(data[band - 1], [2, 98])
        assert info.ranges[channel] == pytest.approx((lo, hi))
        expected = np.rint(np.clip((data[band - 1].astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255))
        assert np.array_equal(raster.rgb[..., channel], expected.astype(np.uint8))
    assert info.crs is not None and "32633" in info.crs
    assert info.transform == (10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
    assert geo.read_raster(path, bands="3,2,1").rgb.tobytes() == raster.rgb.tobytes()  # reproducible


def test_minmax_stretch_grey_band_and_default_bands(tmp_path):
    data = uint16_scene(bands=4)
    path = write_raster(tmp_path / "scene.tif", data)
    fixed = geo.read_raster(path, bands=[2], stretch="minmax:0,4000")
    assert fixed.info.ranges == ((0.0, 4000.0),) and fixed.info.bands == (2,)
    expected = np.rint(np.clip(data[1] / 4000 * 255, 0, 255)).astype(np.uint8)
    for channel in range(3):  # one band: grey
        assert np.array_equal(fixed.rgb[..., channel], expected)
    assert geo.read_raster(path).info.bands == (1, 2, 3)  # no colour labels: the first three bands
    per_band = geo.read_raster(path, bands="1,2,3", stretch="minmax:0,1000/0,2000/0,4000")
    assert per_band.info.ranges == ((0, 1000), (0, 2000), (0, 4000))
    eight = write_raster(tmp_path / "rgb.tif", (data[:3] // 16).astype(np.uint8))
    plain = geo.read_raster(eight)
    assert plain.info.stretch == "none" and plain.info.ranges is None  # 8-bit data as it is
    assert np.array_equal(plain.rgb, np.moveaxis((data[:3] // 16).astype(np.uint8), 0, -1))


def test_nodata_is_left_out_of_the_stretch(tmp_path):
    data = uint16_scene(bands=3)
    holes = np.zeros(data.shape[1:], dtype=bool)
    holes[:10, :] = True
    holes[20:25, 30:] = True
    clean = write_raster(tmp_path / "clean.tif", np.where(holes, 0, data).astype(np.uint16))
    marked = data.copy()
    marked[:, holes] = 65535  # nodata value: must not pull the 98th percentile up
    path = write_raster(tmp_path / "nodata.tif", marked, nodata=65535)
    raster = geo.read_raster(path)
    assert raster.valid is not None and np.array_equal(~raster.valid, holes)
    assert raster.info.nodata == (65535.0,) * 3 and raster.info.valid_fraction == pytest.approx(1 - holes.mean())
    assert (raster.rgb[holes] == 0).all()  # nodata pixels are black for the model
    for channel in range(3):
        lo, hi = np.percentile(data[channel][~holes], [2, 98])
        assert raster.info.ranges[channel] == pytest.approx((lo, hi))
    assert geo.read_raster(clean).info.ranges[0] != raster.info.ranges[0]  # counting them would differ
    floats = data.astype(np.float32)
    floats[0, holes] = np.nan  # float data: NaN is nodata even without a declared value
    float_raster = geo.read_raster(write_raster(tmp_path / "float.tif", floats))
    assert np.array_equal(~float_raster.valid, holes)
    with pytest.raises(RasterError, match=r"band 1 of .*allnodata\.tif holds only nodata"):
        geo.read_raster(write_raster(tmp_path / "allnodata.tif", np.full((3, 8, 8), 7, np.uint16), nodata=7))


def test_window_reads_a_part_with_its_own_geotransform(tmp_path):
    data = uint16_scene(bands=3)
    path = write_raster(tmp_path / "scene.tif", data)
    part = geo.read_raster(path, window="8,4,20,16", stretch="minmax:0,4000")
    full = geo.read_raster(path, stretch="minmax:0,4000")
    assert part.rgb.shape == (16, 20, 3) and (part.info.width, part.info.height) == (20, 16)
    assert np.array_equal(part.rgb, full.rgb[4:20, 8:28])
    assert part.info.window == (8, 4, 20, 16)
    assert part.info.transform == (10.0, 0.0, ORIGIN[0] + 80.0, 0.0, -10.0, ORIGIN[1] - 40.0)


def test_bad_rasters_are_named(tmp_path):
    pytest.importorskip("rasterio")
    path = write_raster(tmp_path / "scene.tif", uint16_scene(bands=4))
    with pytest.raises(RasterError, match=r"band 5 is out of range: .*scene\.tif has 4 bands \(1-4\)"):
        geo.read_raster(path, bands="5,2,1")
    with pytest.raises(RasterError, match=r"window .*lies outside the scene of .*scene\.tif \(56x40 pixels"):
        geo.read_raster(path, window="50,0,10,10")
    with pytest.raises(RasterError, match=r"scene\.tif holds uint16 data; stretch 'none' takes 8-bit data only"):
        geo.read_raster(path, stretch="none")
    with pytest.raises(RasterError, match=r"scene\.tif has 2 ranges for 3 selected bands"):
        geo.read_raster(path, stretch="minmax:0,1/0,2")
    two = write_raster(tmp_path / "two.tif", uint16_scene(bands=2))
    with pytest.raises(RasterError, match=r"two\.tif has 2 bands.*bands="):
        geo.read_raster(two)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(RasterError, match=r"cannot read raster file .*junk\.tif"):
        geo.read_raster(junk)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(RasterError, match=r"truncated\.tif"):
        geo.read_raster(truncated)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        geo.read_raster(tmp_path / "missing.tif")


# ------------------------------------------------------------------------------ predictions
@pytest.fixture(scope="module")
def segmenter(tiny_config, tiny_tokenizer):
    pytest.importorskip("timm")
    from uncertainty_rrsis.inference import ReferringSegmenter

    model = perturbed_model(tiny_config)
    return ReferringSegmenter(model, tiny_tokenizer)


def test_outputs_are_written_on_the_input_grid(segmenter, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    data = uint16_scene(bands=3, height=45, width=70)
    data[:, :6, :] = 0
    path = write_raster(tmp_path / "scene.tif", data, nodata=0)
    pred = segmenter(str(path), "the red car")
    assert pred.raster is not None and tuple(pred.mask.shape) == (45, 70)
    assert not pred.mask[:6].any() and float(pred.probability[:6].max()) == 0.0  # nodata: mask 0
    paths = pred.save(tmp_path / "out" / "scene")
    assert {p.name for p in paths.values()} == {"scene_mask.tif", "scene_uncertainty.tif", "scene_panel.png"}
    with rasterio.open(path) as src, rasterio.open(paths["mask"]) as mask, \
            rasterio.open(paths["uncertainty"]) as unc:
        for out in (mask, unc):
            assert out.crs == src.crs and out.transform == src.transform
            assert (out.width, out.height) == (src.width, src.height)
        written = mask.read(1)
        assert mask.dtypes[0] == "uint8" and set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, pred.mask.numpy())
        assert (mask.read_masks(1)[:6] == 0).all() and (mask.read_masks(1)[6:] == 255).all()
        values = unc.read(1)
        assert unc.dtypes[0] == "float32" and np.isnan(unc.nodata)
        assert np.isnan(values[:6]).all() and np.allclose(values[6:], pred.uncertainty.numpy()[6:])
    assert pred.mask_fraction == pytest.approx(pred.mask_pixels / (39 * 70))  # of the valid pixels


def test_window_of_a_scene_keeps_the_window_grid(segmenter, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from uncertainty_rrsis.inference import ReferringSegmenter

    path = write_raster(tmp_path / "scene.tif", uint16_scene(bands=4, height=60, width=80))
    windowed = ReferringSegmenter(segmenter.model, segmenter.tokenizer, bands="3,2,1", window="10,20,40,30")
    pred = windowed(str(path), "the road")
    paths = pred.save(tmp_path / "w")
    with rasterio.open(paths["mask"]) as out:
        assert (out.width, out.height) == (40, 30)
        assert out.transform == grid(100.0, -200.0)


def test_missing_crs_writes_plain_files_with_a_warning(segmenter, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    path = write_raster(tmp_path / "nocrs.tif", uint16_scene(bands=3), crs=None)
    from uncertainty_rrsis.inference import ReferringSegmenter

    raster_reader = ReferringSegmenter(segmenter.model, segmenter.tokenizer, stretch="percentile")
    pred = raster_reader(str(path), "the road")
    with pytest.warns(geo.GeoreferenceWarning, match=r"nocrs\.tif has no CRS: .*written without georeferencing"):
        paths = pred.save(tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(paths["mask"]) as out:
            assert out.crs is None and (out.width, out.height) == (56, 40)
    picture = tmp_path / "picture.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(picture)
    png_pred = segmenter(str(picture), "the road")
    with pytest.warns(geo.GeoreferenceWarning, match="not a georeferenced raster"):
        paths = png_pred.save(tmp_path / "png", geotiff=True)
    assert paths["mask"].suffix == ".tif"
