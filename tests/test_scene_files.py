"""Rasters read by windows and written band by band (``SceneSegmenter.segment_file``, ``RasterReader``,
``GeoTiffWriter``): the same answer as the scene held in memory, on the input's grid, with nodata; and
``examples/predict.py`` on GeoTIFFs goes this way. Everything here needs rasterio and skips without it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")
rasterio = pytest.importorskip("rasterio")

from uncertainty_rrsis import geo  # noqa: E402
from uncertainty_rrsis.geo import RasterReader, read_raster  # noqa: E402
from uncertainty_rrsis.geo.read import sample_step  # noqa: E402
from uncertainty_rrsis.inference import ReferringSegmenter  # noqa: E402
from uncertainty_rrsis.scenes import SceneResult, SceneSegmenter, files, window_pass  # noqa: E402

from helpers.examples import load_example  # noqa: E402
from helpers.rasters import grid, uint16_scene, write_raster  # noqa: E402
from helpers.tiny import perturbed_model  # noqa: E402

SENTENCE = "the river that crosses the scene"


@pytest.fixture(scope="module")
def segmenter(tiny_config, tiny_tokenizer) -> ReferringSegmenter:
    model = perturbed_model(tiny_config)
    return ReferringSegmenter(model, tiny_tokenizer, batch_size=3)


def scene_with_nodata(tmp_path, height=150, width=170, name="scene.tif"):
    """A 4-band uint16 GeoTIFF whose top-left corner is nodata (value 0)."""
    data = uint16_scene(height=height, width=width, bands=4, seed=3)
    data[:, :12, :20] = 0
    return write_raster(tmp_path / name, data, nodata=0)


def read_outputs(result: SceneResult):
    with rasterio.open(result.files["mask"]) as mask, rasterio.open(result.files["uncertainty"]) as unc:
        return mask.read(1), mask.read_masks(1), unc.read(1), mask.crs, mask.transform


def assert_same_answer(result: SceneResult, pred) -> None:
    """The files hold the in-memory prediction (the mask may differ only where the probability is 0.5 +- 1e-4)."""
    mask, validity, unc, crs, transform = read_outputs(result)
    assert crs.to_string() == "EPSG:32633" and transform == grid()
    expected = pred.mask.numpy()
    differ = (mask == 255) != expected
    assert not differ[np.abs(pred.probability.numpy() - 0.5) > 1e-4].any()
    valid = pred.valid.numpy()
    assert np.array_equal(validity == 255, valid) and not (mask[~valid] == 255).any()
    assert np.isnan(unc[~valid]).all()
    assert np.allclose(unc[valid], pred.uncertainty.numpy()[valid], atol=1e-5)
    assert result.valid_pixels == int(valid.sum())
    assert abs(result.mask_pixels - pred.mask_pixels) <= int(differ.sum())
    if not differ.any():
        assert result.mean_margin == pytest.approx(pred.mean_margin, abs=1e-5)
        assert result.mean_uncertainty_in_mask == pytest.approx(pred.mean_uncertainty(pred.mask), abs=1e-5)
    assert result.mean_uncertainty == pytest.approx(pred.mean_uncertainty(), abs=1e-5)
    assert result.summary().keys() == pred.summary().keys()


# ------------------------------------------------------------------------------ reading by windows
def test_windows_and_bands_of_rows_read_what_a_whole_read_gives(tmp_path):
    path = scene_with_nodata(tmp_path)
    whole = read_raster(path, bands="3,2,1")
    with RasterReader(path, bands="3,2,1") as reader:
        assert reader.info.ranges == whole.info.ranges and reader.may_have_nodata
        rgb, valid = reader.read(30, 7, 50, 60)
        assert np.array_equal(rgb, whole.rgb[30:80, 7:67]) and valid is None  # no nodata in this window
        rgb, valid = reader.read(0, 0, 40, 40)
        assert np.array_equal(rgb, whole.rgb[:40, :40]) and np.array_equal(valid, whole.valid[:40, :40])
        stacked = np.concatenate([picture for _, picture, _ in reader.rows(64)])
        assert np.array_equal(stacked, whole.rgb)
        with pytest.raises(geo.RasterError, match="outside the 170x150 area"):
            reader.read(140, 0, 20, 10)


def test_statistics_of_a_large_area_take_every_kth_row_and_column(tmp_path, monkeypatch):
    from uncertainty_rrsis.geo import read as read_module

    assert sample_step(4096, 4096) == 1 and sample_step(4097, 4096) == 2 and sample_step(10_000, 10_000) == 3
    monkeypatch.setattr(read_module, "_PERCENTILE_SAMPLE", 500)
    data = uint16_scene(height=60, width=80, bands=3, seed=5)
    data[:, 5:9, :] = 0
    path = write_raster(tmp_path / "big.tif", data, nodata=0)
    k = sample_step(60, 80)
    assert k == 4
    info = read_raster(path).info
    for channel in range(3):
        sample = data[channel][::k, ::k]
        lo, hi = np.percentile(sample[sample != 0], [2, 98])
        assert info.ranges[channel] == pytest.approx((lo, hi))


def test_overview_is_the_mean_of_k_by_k_blocks(tmp_path):
    path = write_raster(tmp_path / "s.tif", uint16_scene(height=45, width=70, bands=3, seed=6))
    with RasterReader(path) as reader:
        full = reader.read()[0].astype(np.float64)
        same, one = reader.overview(45 * 70)
        assert one == 1 and np.array_equal(same, full.astype(np.uint8))
        small, k = reader.overview(300)
    assert k == 4 and small.shape == (12, 18, 3)
    assert np.array_equal(small[3, 5], np.rint(full[12:16, 20:24].mean(axis=(0, 1))).astype(np.uint8))
    assert np.array_equal(small[11, 17], np.rint(full[44:45, 68:70].mean(axis=(0, 1))).astype(np.uint8))  # edge


def test_writer_checks_the_rows_it_is_given(tmp_path):
    path = scene_with_nodata(tmp_path, height=30, width=40)
    info = read_raster(path).info
    with geo.GeoTiffWriter(tmp_path / "out.tif", info, dtype="uint8", with_mask=True) as writer:
        writer.write(0, np.zeros((20, 40), np.uint8))
        with pytest.raises(ValueError, match="rows 20..31 of width 40 do not fit a 40x30 map"):
            writer.write(20, np.zeros((11, 40), np.uint8))
        writer.write(20, np.full((10, 40), 255, np.uint8), np.arange(40)[None, :].repeat(10, 0) > 3)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs is not None and (out.read(1)[20:] == 255).all()
        assert (out.read_masks(1)[20:, :4] == 0).all() and (out.read_masks(1)[:20] == 255).all()


# ------------------------------------------------------------------------------ the answer, by windows
def test_single_pass_written_by_bands_equals_the_prediction_in_memory(segmenter, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "STRIP_ROWS", 40)  # several bands of rows
    path = scene_with_nodata(tmp_path)
    pred = segmenter(str(path), SENTENCE)
    result = SceneSegmenter(segmenter, windows=False).segment_file(path, SENTENCE, tmp_path / "out" / "single")
    assert isinstance(result, SceneResult) and result.details["mode"] == "single"
    assert {p.name for p in result.files.values()} == {"single_mask.tif", "single_uncertainty.tif",
                                                        "single_panel.png"}
    assert_same_answer(result, pred)
    assert not list((tmp_path / "out").glob(".scene-bands-*"))  # the temporary file is gone


@pytest.mark.parametrize("combine,full_tiling", [("components", True), ("components", False), ("gate", False),
                                                 ("windows", True), ("mean", False)])
def test_coarse_to_fine_by_windows_equals_the_scene_in_memory(segmenter, tmp_path, monkeypatch, combine,
                                                              full_tiling):
    monkeypatch.setattr(files, "STRIP_ROWS", 48)
    path = scene_with_nodata(tmp_path)
    scenes = SceneSegmenter(segmenter, window_size=64, combine=combine, full_tiling=full_tiling, window_batch=2,
                            uncertainty_threshold=0.0, min_probability=0.0)
    pred = scenes(str(path), SENTENCE)
    monkeypatch.setattr(window_pass, "FINISH_ROWS", 5)  # the bands finished in small pieces: the same answer
    result = scenes.segment_file(path, [SENTENCE], [tmp_path / "c2f"])[0]
    assert pred.details["windows"] > 1 and result.details["windows"] == pred.details["windows"]
    assert result.details.get("redrawn") == pred.details.get("redrawn")
    assert_same_answer(result, pred)


def test_a_scene_above_the_overview_size_is_seen_through_block_means(segmenter, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "OVERVIEW_PIXELS", 50 * 50)
    path = scene_with_nodata(tmp_path)
    result = SceneSegmenter(segmenter, window_size=64).segment_file(path, SENTENCE, tmp_path / "big")
    mask, validity, unc, _, _ = read_outputs(result)
    assert mask.shape == (150, 170) and (validity[:12, :20] == 0).all()
    assert np.isfinite(unc[validity > 0]).all() and result.files["panel"].stat().st_size > 0


def test_prefixes_must_match_the_sentences(segmenter, tmp_path):
    path = scene_with_nodata(tmp_path, height=40, width=40)
    with pytest.raises(ValueError, match="2 sentences and 1 output prefixes"):
        SceneSegmenter(segmenter).segment_file(path, ["a", "b"], [tmp_path / "x"])


def test_predict_writes_geotiffs_band_by_band(segmenter, tmp_path, monkeypatch):
    predict = load_example("predict")
    path = scene_with_nodata(tmp_path)
    monkeypatch.setattr(ReferringSegmenter, "from_pretrained", classmethod(
        lambda cls, *a, **k: ReferringSegmenter(segmenter.model, segmenter.tokenizer,
                                                **{n: k[n] for n in ("batch_size", "bands", "stretch", "window")})))
    calls = []
    real = SceneSegmenter.segment_file
    monkeypatch.setattr(SceneSegmenter, "segment_file", lambda self, *a: calls.append(self.windows) or real(self, *a))
    for extra, mode in (([], "single"), (["--coarse-to-fine", "--window-size", "64"], "coarse-to-fine")):
        rows = predict.main(["ckpt", "--image", str(path), "--sentence", SENTENCE, "--output-dir",
                             str(tmp_path / mode), "--no-progress", *extra])
        (row,) = rows
        assert row["mode"] == mode and row["georeferenced"] and row["mask"].endswith("_mask.tif")
        assert (row["width"], row["height"]) == (170, 150) and 0.0 <= row["mask_share"] <= 1.0
        assert row["mean_uncertainty"] is not None and row["error"] is None
    assert calls == [False, True]
