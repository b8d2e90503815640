"""Fixture builders for the data tests: small folders in each dataset's exact on-disk
format, built from the genuine annotations in ``../shared/data/real-samples/`` (sentences,
COCO RLE masks, the RRSIS-D refs pickle) paired with generated images of the right size.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from uncertainty_rrsis.data._rle import rle_decode, rle_encode

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_SAMPLES = REPO_ROOT.parent / "shared" / "data" / "real-samples"


def real_samples() -> Path:
    """The real-samples folder (``../shared/data/real-samples`` next to the repository)."""
    if not (REAL_SAMPLES / "SOURCES.md").is_file():
        pytest.fail(
            f"real sample annotations not found at {REAL_SAMPLES}: the tests expect a copy of the "
            "project's shared/ folder next to the repository (shared/data/real-samples/)"
        )
    return REAL_SAMPLES


def load_jsonl(group: str) -> list[dict[str, Any]]:
    """Lines of ``<group>/datainfo/<group>_test.jsonl`` (group: risbench, refsegrs, rrsisd)."""
    path = real_samples() / group / "datainfo" / f"{group}_test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def real_refs() -> list[dict[str, Any]]:
    with (real_samples() / "rrsisd" / "rrsisd" / "refs(unc).p").open("rb") as fh:
        return pickle.load(fh)


def fake_image(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 smooth picture (cheap, deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, 3)
    img = base[None, None, :] + 0.1 * (xx[..., None] + yy[..., None]) % 50
    return np.clip(img, 0, 255).astype(np.uint8)


def make_tokenizer(folder: Path) -> Any:
    """A tiny ``BertTokenizerFast`` from a vocab of the words of the real sentences."""
    from transformers import BertTokenizerFast

    words: set[str] = set()
    for group in ("risbench", "refsegrs", "rrsisd"):
        for item in load_jsonl(group):
            words.update(item["sent"].lower().replace(",", " ").replace(".", " ").split())
    for ref in real_refs():
        for s in ref["sentences"]:
            words.update(s["raw"].lower().split())
    words.update(
        "the red blue white yellow black green building vehicle storage tank ship road river "
        "sports field".split()
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "'", "-", *sorted(words)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:  # transformers >= 5 takes ``vocab``; 4.x takes ``vocab_file``
        tokenizer = BertTokenizerFast(vocab=str(path), do_lower_case=True)
    except TypeError:
        tokenizer = BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
    if len(tokenizer) != len(vocab):
        tokenizer = BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
    assert len(tokenizer) == len(vocab), "tiny test tokenizer did not load its vocab"
    return tokenizer


def build_risbench(root: Path) -> list[dict[str, Any]]:
    """RISBench layout with the 15 real test lines: PNG images, 3-channel 0/255 masks."""
    items = load_jsonl("risbench")
    (root / "img_rgb").mkdir(parents=True)
    (root / "mask").mkdir()
    for k, item in enumerate(items):
        h, w = item["segmentation"]["size"]
        Image.fromarray(fake_image(h, w, k)).save(root / "img_rgb" / item["file_name"])
        m = rle_decode(item["segmentation"]).astype(np.uint8) * 255
        Image.fromarray(np.stack([m, m, m], axis=2)).save(root / "mask" / item["file_name"])
    lines = "".join(f"{item['image_id']} {item['sent']}\n" for item in items)
    (root / "output_phrase_test.txt").write_text(lines, encoding="utf-8")
    return items


def build_refsegrs(root: Path) -> list[dict[str, Any]]:
    """RefSegRS layout with the 7 real test lines: .tif images and masks.

    Foreground pixels are 255; a background patch holds value 40 (below the > 50 cut).
    """
    items = load_jsonl("refsegrs")
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, item in enumerate(items):
        h, w = item["segmentation"]["size"]
        Image.fromarray(fake_image(h, w, 100 + k)).save(root / "images" / f"{item['image_id']}.tif")
        fg = rle_decode(item["segmentation"])
        m = np.where(fg, 255, 0).astype(np.uint8)
        patch = np.zeros_like(fg)
        patch[:8, :8] = True
        m[patch & ~fg] = 40
        Image.fromarray(m).save(root / "masks" / f"{item['image_id']}.tif")
    lines = "".join(f"{item['image_id']} {item['sent']}\n" for item in items)
    (root / "output_phrase_test.txt").write_text(lines, encoding="utf-8")
    return items


def _square_polygon(h: int, w: int, k: int) -> list[float]:
    x0, y0 = 2 + k % 5, 3 + k % 4
    x1, y1 = w - 4, h - 3
    return [x0, y0, x1, y0 + 1, x1 - 2, y1, x0 + 1, y1 - 1]


def build_rrsisd(root: Path) -> dict[str, Any]:
    """RRSIS-D layout: the real ``refs(unc).p`` (40 test refs) + an ``instances.json``.

    The 3 refs that have a real mask in ``rrsisd_test.jsonl`` get it (list of RLE dicts
    with string counts, 800x800, JPEG images of that size). The other 37 get small
    generated JPEGs of varied sizes and masks stored alternately as compressed RLE and
    as polygons. Returns ``{"refs", "masks": {ann_id: (H, W) bool or None}, "polygon_ids"}``
    (``None`` = polygon, expected mask computed by the reader's rasteriser).
    """
    refs = real_refs()
    real = {item["ann_id"]: item for item in load_jsonl("rrsisd")}
    data_dir = root / "rrsisd"
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    data_dir.mkdir(parents=True)
    image_dir.mkdir(parents=True)
    shutil.copy(real_samples() / "rrsisd" / "rrsisd" / "refs(unc).p", data_dir / "refs(unc).p")
    images, anns, masks, polygon_ids = [], [], {}, []
    cats = {1: "Expressway-toll-station", 19: "windmill"}
    for k, ref in enumerate(refs):
        if ref["ann_id"] in real:
            item = real[ref["ann_id"]]
            h, w = item["segmentation"][0]["size"]
            segmentation: Any = item["segmentation"]
            masks[ref["ann_id"]] = rle_decode(item["segmentation"][0])
            cats[item["category_id"]] = item["category_name"]
        else:
            h, w = 40 + (k % 3) * 8, 48 + (k % 2) * 16
            if k % 2:
                m = np.zeros((h, w), bool)
                m[k % 7 : h - 5, 3 : w - (k % 9)] = True
                segmentation = [rle_encode(m)]
                masks[ref["ann_id"]] = m
            else:
                segmentation = [_square_polygon(h, w, k)]
                polygon_ids.append(ref["ann_id"])
        cats.setdefault(ref["category_id"], f"category-{ref['category_id']}")
        Image.fromarray(fake_image(h, w, 200 + k)).save(image_dir / ref["file_name"], quality=90)
        images.append({"id": ref["image_id"], "file_name": ref["file_name"], "height": h, "width": w})
        anns.append(
            {
                "id": ref["ann_id"],
                "image_id": ref["image_id"],
                "segmentation": segmentation,
                "categories_id": ref["category_id"],
                "bbox": [0, 0, w - 1, h - 1],
                "iscrowd": 0,
            }
        )
    instances = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in sorted(cats.items())],
    }
    (data_dir / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return {"refs": refs, "masks": masks, "polygon_ids": polygon_ids, "instances": instances}
