"""examples/predict.py on folders and pair lists: one row per pair with the mask's area and the mean
uncertainty, GeoTIFFs in and out, coarse to fine, and errors that name the file and the line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")


from helpers.examples import load_example
from helpers.tiny import perturbed_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    model = perturbed_model(tiny_config)
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "best", tokenizer=tiny_tokenizer)


def _picture(path: Path, height: int, width: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_a_folder_with_one_sentence(checkpoint, tmp_path, capsys):
    predict = load_example("predict")
    folder = tmp_path / "scenes"
    _picture(folder / "b.png", 30, 40, 0)
    _picture(folder / "a.JPG", 36, 28, 1)
    _picture(folder / "c.tif", 20, 24, 2)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    _picture(folder / "sub" / "d.png", 20, 20, 3)  # subfolders are not read
    out = tmp_path / "out"
    rows = predict.main([str(checkpoint), "--image", str(folder), "--sentence", "the red car", "--output-dir", str(out),
                         "--device", "cpu"])
    assert [Path(r["image"]).name for r in rows] == ["a.JPG", "b.png", "c.tif"]  # sorted by name
    assert "pair" in capsys.readouterr().err  # the progress bar
    for row in rows:
        mask = np.asarray(Image.open(row["mask"])) == 255
        assert (row["height"], row["width"]) == mask.shape and row["mask_pixels"] == int(mask.sum())
        assert row["mask_share"] == pytest.approx(mask.mean())
        assert 0.0 <= row["mean_uncertainty"] <= 1.0 and row["mode"] == "single" and row["error"] is None
        assert Path(row["uncertainty"]).is_file() and Path(row["panel"]).is_file() and not row["georeferenced"]
        assert row["stretch"] is None
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["mask_pixels"] for r in table] == [str(r["mask_pixels"]) for r in rows]
    assert set(table[0]) == set(predict.COLUMNS)
    assert json.loads((out / "predictions.json").read_text(encoding="utf-8")) == rows


def test_pairs_from_csv_and_jsonl(checkpoint, tmp_path):
    predict = load_example("predict")
    a = _picture(tmp_path / "data" / "a.png", 30, 40, 0)
    b = _picture(tmp_path / "data" / "b.png", 32, 32, 1)
    pairs = tmp_path / "data" / "pairs.csv"
    with pairs.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "image", "note"])
        writer.writerow(["the red car", "a.png", "relative to the file"])
        writer.writerow(["the road, left of the pier", str(b), "absolute"])
        writer.writerow(["the red car", "a.png", "the same pair again"])
    rows = predict.main([str(checkpoint), "--pairs", str(pairs), "--output-dir", str(tmp_path / "out"), "--device",
                         "cpu", "--no-progress"])
    assert [(Path(r["image"]).name, r["sentence"]) for r in rows] == [("a.png", "the red car"),
                                                                       ("b.png", "the road, left of the pier")]
    assert Path(rows[0]["image"]).resolve() == a.resolve()
    lines = tmp_path / "data" / "pairs.jsonl"
    lines.write_text(json.dumps({"image": "a.png", "sentence": "the red car"}) + "\n\n"
                     + json.dumps({"image": "b.png", "sentence": "a small white ship"}) + "\n", encoding="utf-8")
    rows = predict.main([str(checkpoint), "--pairs", str(lines), "--output-dir", str(tmp_path / "out2"), "--device",
                         "cpu", "--no-progress"])
    assert [r["sentence"] for r in rows] == ["the red car", "a small white ship"]
    assert rows[0]["mask"] != rows[1]["mask"]


def test_bad_pair_lists_and_images_are_named(checkpoint, tmp_path):
    predict = load_example("predict")
    _picture(tmp_path / "a.png", 20, 20, 0)
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("image,text\na.png,the car\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_column\.csv: the header must name the columns image and sentence"):
        predict.read_pairs(no_column)
    empty = tmp_path / "empty_sentence.csv"
    empty.write_text("image,sentence\na.png,the car\na.png,  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty_sentence\.csv, line 3: the sentence for a\.png is empty"):
        predict.read_pairs(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png", "sentence": "x"}\n{"image": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: not a JSON object"):
        predict.read_pairs(broken)
    with pytest.raises(ValueError, match=r"pairs\.txt: a pairs file is \.csv"):
        (tmp_path / "pairs.txt").write_text("x")
        predict.read_pairs(tmp_path / "pairs.txt")
    with pytest.raises(FileNotFoundError, match=r"the folder .*empty_folder holds no image file"):
        (tmp_path / "empty_folder").mkdir()
        predict.expand_images([str(tmp_path / "empty_folder")])
    missing = tmp_path / "missing.csv"
    missing.write_text("image,sentence\na.png,the car\nnope.png,the car\n", encoding="utf-8")
    argv = [str(checkpoint), "--pairs", str(missing), "--output-dir", str(tmp_path / "out"), "--device", "cpu",
            "--no-progress"]
    with pytest.raises(ValueError, match=r"nope\.png"):
        predict.main(argv)
    with pytest.raises(SystemExit) as stop:  # --keep-going: the other pairs are predicted, the error is a row
        predict.main([*argv, "--keep-going"])
    assert stop.value.code == 1
    table = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert table[0]["error"] is None and Path(table[0]["mask"]).is_file()
    assert "nope.png" in table[1]["error"] and table[1]["mask"] is None


def test_geotiffs_and_coarse_to_fine(checkpoint, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    predict = load_example("predict")
    data = (np.random.default_rng(0).random((4, 150, 210)) * 4000).astype(np.uint16)
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=210, height=150, count=4, dtype="uint16", crs="EPSG:4326",
                       transform=Affine(0.001, 0, 10.0, 0, -0.001, 45.0)) as dst:
        dst.write(data)
    out = tmp_path / "out"
    rows = predict.main([str(checkpoint), "--image", str(scene), "--sentence", "the road", "--bands", "3,2,1",
                         "--coarse-to-fine", "--window-size", "64", "--output-dir", str(out), "--device", "cpu",
                         "--no-progress"])
    row = rows[0]
    assert row["mode"] == "coarse-to-fine" and row["georeferenced"] and (row["width"], row["height"]) == (210, 150)
    assert row["mask"].endswith("_mask.tif") and row["uncertainty"].endswith("_uncertainty.tif")
    low, high = np.percentile(data[2], [2, 98])
    assert row["stretch"].startswith(f"percentile:2,98 (bands 3,2,1; band 3: {low:g} to {high:g}; band 2: ")
    with rasterio.open(row["mask"]) as mask, rasterio.open(scene) as src:
        assert mask.crs == src.crs and mask.transform == src.transform and mask.shape == src.shape
        assert int((mask.read(1) == 255).sum()) == row["mask_pixels"]
    png = predict.main([str(checkpoint), "--image", str(scene), "--sentence", "the road", "--bands", "3,2,1",
                        "--output-format", "png", "--output-dir", str(tmp_path / "png"), "--device", "cpu",
                        "--no-progress"])
    assert png[0]["mask"].endswith("_mask.png") and png[0]["mode"] == "single"
    with pytest.raises(ValueError, match=r"band 7 is out of range: .*scene\.tif has 4 bands"):
        predict.main([str(checkpoint), "--image", str(scene), "--sentence", "the road", "--bands", "7,2,1",
                      "--output-dir", str(tmp_path / "bad"), "--device", "cpu", "--no-progress"])
