"""examples/predict.py gives every (image, sentence) pair files of its own, with stable names, and
lists them in predictions.json and predictions.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")

from uncertainty_rrsis.models import CroBIMU  # noqa: E402

from helpers.examples import load_example

SENTENCES = ["The white ship", "the white ship", "the white ship.", "港口里的白色船", "das Schiff über der Brücke",
             "the white ship"]  # the last repeats the second exactly


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    torch.manual_seed(0)
    model = CroBIMU(tiny_config).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "best", tokenizer=tiny_tokenizer)


def test_output_names_are_unique_and_stable(tmp_path):
    predict = load_example("predict")
    a, b = tmp_path / "a" / "scene.png", tmp_path / "b" / "scene.png"
    stems = {predict.output_stem(image, s) for image in (a, b) for s in SENTENCES[:5]}
    assert len(stems) == 10
    assert predict.output_stem(a, SENTENCES[0]) == predict.output_stem(str(a), SENTENCES[0])  # stable
    assert predict.output_stem(a, "The white ship").startswith("scene__the_white_ship__")
    assert predict.output_stem(a, SENTENCES[3]).startswith("scene__sentence__")  # no Latin letters: hash only
    assert predict.output_stem(a, SENTENCES[4]).startswith("scene__das_schiff_uber_der_brucke__")
    relative = Path("a") / "scene.png"
    assert predict.output_stem(relative, SENTENCES[0]) == predict.output_stem(relative.resolve(), SENTENCES[0])


def test_every_pair_gets_its_own_files_and_a_row(checkpoint, tmp_path, monkeypatch, capsys):
    predict = load_example("predict")
    images = []
    for k, folder in enumerate(("a", "b")):  # the same file name in two folders, different pictures
        path = tmp_path / folder / "scene.png"
        path.parent.mkdir()
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "out"
    argv = [str(checkpoint), "--output-dir", str(out), "--device", "cpu"]
    for image in images:
        argv += ["--image", image]
    for sentence in SENTENCES:
        argv += ["--sentence", sentence]
    rows = predict.main(argv)
    assert len(rows) == 2 * 5  # the repeated sentence is predicted once per image
    files = [row[kind] for row in rows for kind in ("mask", "uncertainty", "panel")]
    assert len(set(files)) == len(files) == 30 and all(Path(f).is_file() for f in files)
    assert {(row["image"], row["sentence"]) for row in rows} == {(i, s) for i in images for s in SENTENCES[:5]}
    table = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert table == rows
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["image"], r["sentence"], r["mask"]) for r in lines] == [(r["image"], r["sentence"], r["mask"])
                                                                       for r in rows]
    for row in rows:  # each mask file holds its own row's prediction
        assert Path(row["mask"]).name.startswith(predict.output_stem(row["image"], row["sentence"]))
    again = predict.main(argv)  # a second run writes the same names
    assert [r["mask"] for r in again] == [r["mask"] for r in rows]
    assert len(list(out.glob("*_mask.png"))) == 10
