"""Readers on folders that this project's test code writes in each dataset's exact format.

The folders come from ``helpers.datasets`` (generated sentences, masks, pictures, RRSIS-D refs
and COCO annotations, RLE strings by pycocotools); they exist in any clone. The same checks on
the genuine sample annotations are in ``test_real_samples.py``.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_rrsis.data import (
    RRSISD,
    DatasetError,
    DatasetLayoutError,
    RefSegRS,
    RISBench,
    SampleError,
    check_dataset,
    collate,
)
from uncertainty_rrsis.data import check as check_cli
from uncertainty_rrsis.data._rle import decode_counts, encode_counts, rle_decode, rle_encode
from uncertainty_rrsis.data.transforms import IMAGENET_MEAN, IMAGENET_STD

from helpers.datasets import (
    build_refsegrs,
    build_risbench,
    build_rrsisd,
    coco_decode,
    coco_rle,
    make_tokenizer,
    rasterise_polygons,
    refsegrs_mask_values,
    refsegrs_samples,
    risbench_samples,
)

S = 32
SIZE = 512  # RISBench and RefSegRS pictures are 512 x 512
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def risbench_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("risbench")
    build_risbench(root, size=SIZE)
    return root


@pytest.fixture(scope="module")
def refsegrs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("refsegrs")
    build_refsegrs(root, size=SIZE)
    return root


@pytest.fixture(scope="module")
def rrsisd(tmp_path_factory):
    return build_rrsisd(tmp_path_factory.mktemp("rrsisd"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, rrsisd):
    sentences = [s.sentence for s in risbench_samples(size=8) + refsegrs_samples(size=8)]
    sentences += [s.get("raw", s["sent"]) for r in rrsisd.refs for s in r["sentences"]]
    return make_tokenizer(tmp_path_factory.mktemp("tok"), sentences)


def _nearest(mask: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127


def _test_sentences(rrsisd) -> list[tuple[dict, dict]]:
    """(ref, sentence) of every test sentence, in file order: the reader's evaluation samples."""
    return [(r, s) for r in rrsisd.refs if r["split"] == "test" for s in r["sentences"]]


# ---------------------------------------------------------------- COCO RLE (pure numpy)
def test_rle_matches_pycocotools_both_ways(rrsisd):
    masks = [s.mask for s in risbench_samples(size=SIZE) + refsegrs_samples(size=SIZE)]
    masks += [m for ann_id, m in rrsisd.masks.items() if rrsisd.encodings[ann_id] == "rle"]
    assert len(masks) == 15 + 7 + 7
    for mask in masks:
        theirs = coco_rle(mask)  # pycocotools' string
        np.testing.assert_array_equal(rle_decode(theirs), mask)
        ours = rle_encode(mask)
        assert ours == theirs  # byte-identical counts string, same size
        np.testing.assert_array_equal(coco_decode(ours), mask)
        assert encode_counts(decode_counts(theirs["counts"])) == theirs["counts"]
    assert decode_counts(theirs["counts"].encode("ascii")) == decode_counts(theirs["counts"])  # bytes too


def test_rle_roundtrip_edge_cases():
    for m in (np.zeros((3, 4), bool), np.ones((3, 4), bool), np.eye(5, dtype=bool)):
        enc = rle_encode(m)
        np.testing.assert_array_equal(rle_decode(enc), m)
        np.testing.assert_array_equal(coco_decode(enc), m)
    with pytest.raises(ValueError, match="pixels"):
        rle_decode({"size": [4, 4], "counts": [3, 2]})


# ---------------------------------------------------------------------------- RISBench
def test_risbench_samples(risbench_root, tokenizer):
    samples = risbench_samples(size=SIZE)
    ds = RISBench(risbench_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert len(ds) == 15
    for i, expected in enumerate(samples):
        s = ds[i]
        assert s["id"] == Path(expected.name).stem
        assert s["sentence"] == expected.sentence  # inner double spaces survive
        assert s["image"].shape == (3, S, S) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (S, S) and s["mask"].dtype == torch.bool
        assert s["orig_size"] == (SIZE, SIZE)
        np.testing.assert_array_equal(s["orig_mask"].numpy(), expected.mask)
        np.testing.assert_array_equal(s["mask"].numpy(), _nearest(expected.mask, S))
        assert s["input_ids"].shape == (20,) and s["input_ids"].dtype == torch.long
        assert s["text_padding_mask"].dtype == torch.bool
        np.testing.assert_array_equal(s["text_padding_mask"].numpy(), (s["input_ids"] == 0).numpy())
        assert s["tags"] == {}
    with Image.open(risbench_root / "mask" / samples[0].name) as mask_file:
        assert mask_file.mode == "RGB"  # 3-channel 0/255 masks, channel 0 > 0 is the target
    assert "The  small" in ds[9]["sentence"] and ds[9]["sentence"].endswith("image .")
    assert len(samples[0].sentence.split()) > 20
    long = ds[0]  # cut to 20 ids, [CLS] ... [SEP], no padding
    assert not long["text_padding_mask"].any()
    assert long["input_ids"][0] == tokenizer.cls_token_id and long["input_ids"][-1] == tokenizer.sep_token_id
    full = tokenizer(samples[0].sentence)["input_ids"]
    assert len(full) > 20 and long["input_ids"][:19].tolist() == full[:19]  # the head of the sentence
    short = ds[1]
    n = int((~short["text_padding_mask"]).sum())
    assert n == len(tokenizer(samples[1].sentence)["input_ids"]) < 20
    assert short["text_padding_mask"][n:].all() and not short["text_padding_mask"][:n].any()
    assert short["input_ids"][n - 1] == tokenizer.sep_token_id


def test_image_resize_and_normalisation_are_lavt_exact(risbench_root):
    ds = RISBench(risbench_root, "test", image_size=S)
    raw = Image.open(risbench_root / "img_rgb" / risbench_samples(size=8)[0].name).convert("RGB")
    expected = np.asarray(raw.resize((S, S), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (expected - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(ds[0]["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    torch_ds = RISBench(risbench_root, "test", image_size=(S, 2 * S), resize_backend="torch")
    assert torch_ds[0]["image"].shape == (3, S, 2 * S) and torch_ds[0]["mask"].shape == (S, 2 * S)
    assert "input_ids" not in torch_ds[0]  # no tokenizer -> no ids


def test_risbench_val_warning_once(risbench_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(risbench_root, root)
    lines = (root / "output_phrase_test.txt").read_text().splitlines()
    (root / "output_phrase_train.txt").write_text("\n".join(lines[:10]) + "\n")
    (root / "output_phrase_val.txt").write_text("\n".join(lines[5:12]) + "\n")
    with pytest.warns(UserWarning, match="5 of its 7 val images are also in output_phrase_train.txt"):
        RISBench(root, "val", image_size=S)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RISBench(root, "val", image_size=S)  # once per root
        RISBench(root, "train", image_size=S)


# ---------------------------------------------------------------------------- RefSegRS
def test_refsegrs_samples(refsegrs_root, tokenizer):
    samples = refsegrs_samples(size=SIZE)
    ds = RefSegRS(refsegrs_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert [ds[i]["sentence"] for i in range(len(ds))] == [s.sentence for s in samples]
    for i, expected in enumerate(samples):
        s = ds[i]
        assert s["id"] == expected.name
        assert s["orig_size"] == (SIZE, SIZE)
        np.testing.assert_array_equal(s["orig_mask"].numpy(), expected.mask)
        np.testing.assert_array_equal(s["mask"].numpy(), _nearest(expected.mask, S))
    assert ds[1]["sentence"] == "vehicle"


def test_refsegrs_foreground_is_above_fifty(refsegrs_root):
    """The mask files hold 40 and 50 in the background and 51 on the object: only > 50 is foreground."""
    expected = refsegrs_samples(size=SIZE)[0]
    values = np.asarray(Image.open(refsegrs_root / "masks" / f"{expected.name}.tif"))
    assert values.ndim == 2 and {0, 40, 50, 51, 255} <= set(np.unique(values).tolist())
    np.testing.assert_array_equal(values, refsegrs_mask_values(expected.mask))
    got = RefSegRS(refsegrs_root, "test", image_size=S, return_orig_mask=True)[0]["orig_mask"].numpy()
    np.testing.assert_array_equal(got, values > 50)
    assert (got != (values > 40)).any() and (got != (values > 51)).any()  # the cut is exactly 50


# ----------------------------------------------------------------------------- RRSIS-D
def test_rrsisd_eval_samples(rrsisd, tokenizer):
    ds = RRSISD(rrsisd.root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    expected = _test_sentences(rrsisd)
    assert len(ds) == len(expected) == 11  # one sample per sentence of the 8 test refs
    images = {i["id"]: i for i in rrsisd.instances["images"]}
    anns = {a["id"]: a for a in rrsisd.instances["annotations"]}
    categories = {c["id"]: c["name"] for c in rrsisd.instances["categories"]}
    seen = set()
    for i, (ref, sentence) in enumerate(expected):
        s = ds[i]
        assert s["id"] == f"{ref['ref_id']}_{sentence['sent_id']}"
        assert s["sentence"] == sentence.get("raw", sentence["sent"])  # raw (as RMSIN), else sent
        info = images[ref["image_id"]]
        assert s["orig_size"] == (info["height"], info["width"])
        category = ref.get("category_id", anns[ref["ann_id"]]["categories_id"])
        assert s["tags"] == {"category": categories[category]}
        np.testing.assert_array_equal(s["orig_mask"].numpy(), rrsisd.masks[ref["ann_id"]])
        assert s["mask"].shape == (S, S) and s["mask"].any()
        seen.add(rrsisd.encodings[ref["ann_id"]])
    assert seen == {"rle", "rle-parts", "polygon", "polygons"}
    assert ds[0]["orig_size"] == (800, 800) and ds[0]["sentence"] != ds[0]["sentence"].lower()  # raw, not sent
    # the annotation parts are united; polygons are rasterised as pycocotools does
    parts = next(a for a in rrsisd.instances["annotations"] if rrsisd.encodings[a["id"]] == "rle-parts")
    union = coco_decode(parts["segmentation"][0]) | coco_decode(parts["segmentation"][1])
    np.testing.assert_array_equal(rrsisd.masks[parts["id"]], union)
    poly = next(a for a in rrsisd.instances["annotations"] if rrsisd.encodings[a["id"]] == "polygons")
    info = images[poly["image_id"]]
    np.testing.assert_array_equal(
        rrsisd.masks[poly["id"]], rasterise_polygons(poly["segmentation"], info["height"], info["width"])
    )
    assert len(RRSISD(rrsisd.root, "test", image_size=S, all_sentences=False)) == 8


def test_rrsisd_train_mode_draws_one_sentence_per_ref(rrsisd):
    train_refs = [r for r in rrsisd.refs if r["split"] == "train"]
    train = RRSISD(rrsisd.root, "train", image_size=S)
    assert [train[i]["id"] for i in range(len(train))] == [str(r["ref_id"]) for r in train_refs]
    torch.manual_seed(0)
    drawn = {train[0]["sentence"] for _ in range(40)}
    assert drawn == {s["raw"] for s in train_refs[0]["sentences"]} and len(drawn) == 3
    every = RRSISD(rrsisd.root, "train", image_size=S, all_sentences=True)
    assert [every[i]["id"] for i in range(len(every))] == [
        f"{r['ref_id']}_{s['sent_id']}" for r in train_refs for s in r["sentences"]
    ]
    assert len(RRSISD(rrsisd.root, "val", image_size=S)) == 3


def test_rrsisd_refs_file_option(rrsisd):
    extra = dict(rrsisd.refs[0], split="train", ref_id=999001)
    extra["sentences"] = [
        dict(rrsisd.refs[0]["sentences"][0], sent_id=1, raw="the gray windmill"),
        dict(rrsisd.refs[0]["sentences"][0], sent_id=2, raw="a small windmill"),
    ]
    with (rrsisd.root / "rrsisd" / "refs(extra).p").open("wb") as fh:
        pickle.dump([*[r for r in rrsisd.refs if r["split"] != "train"], extra], fh, protocol=4)
    train = RRSISD(rrsisd.root, "train", refs_file="refs(extra).p", image_size=S)
    assert len(train) == 1 and train[0]["id"] == "999001"
    torch.manual_seed(0)
    assert {train[0]["sentence"] for _ in range(30)} == {"the gray windmill", "a small windmill"}
    every = RRSISD(rrsisd.root, "train", refs_file="refs(extra).p", image_size=S, all_sentences=True)
    assert [every[i]["id"] for i in range(2)] == ["999001_1", "999001_2"]


def test_rrsisd_refs_pickle_cannot_run_code(rrsisd):
    with (rrsisd.root / "rrsisd" / "refs(evil).p").open("wb") as fh:
        pickle.dump([{"x": Path("a")}], fh)
    with pytest.raises(DatasetLayoutError, match="only lists, dicts"):
        RRSISD(rrsisd.root, "test", refs_file="refs(evil).p")


# ------------------------------------------------------------------------------ collate
def test_collate_batches_and_pads(risbench_root, tokenizer):
    ds = RISBench(risbench_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    samples = [ds[i] for i in range(3)]
    samples[1]["input_ids"] = samples[1]["input_ids"][:12]
    samples[1]["text_padding_mask"] = samples[1]["text_padding_mask"][:12]
    batch = collate(samples)
    assert batch["image"].shape == (3, 3, S, S) and batch["mask"].shape == (3, S, S)
    assert batch["mask"].dtype == torch.bool
    assert torch.equal(batch["image"][2], samples[2]["image"]) and torch.equal(batch["mask"][0], samples[0]["mask"])
    assert batch["input_ids"].shape == (3, 20) and batch["text_padding_mask"].shape == (3, 20)
    assert batch["text_padding_mask"][1, 12:].all() and (batch["input_ids"][1, 12:] == 0).all()
    assert torch.equal(batch["input_ids"][1, :12], samples[1]["input_ids"])
    assert batch["orig_size"].tolist() == [[SIZE, SIZE]] * 3
    assert isinstance(batch["orig_mask"], list) and batch["orig_mask"][0].shape == (SIZE, SIZE)
    assert batch["id"] == [s["id"] for s in samples] and batch["sentence"] == [s["sentence"] for s in samples]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    assert sum(b["image"].shape[0] for b in loader) == 15


# ------------------------------------------------------------------------- bad inputs
def test_missing_root_and_split_file_name_the_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match="root folder not found.*nowhere[\\s\\S]*img_rgb/<name>.png"):
        RISBench(tmp_path / "nowhere", "test")
    (tmp_path / "img_rgb").mkdir()
    with pytest.raises(DatasetLayoutError, match="output_phrase_val.txt[\\s\\S]*Expected layout"):
        RISBench(tmp_path, "val")
    with pytest.raises(DatasetLayoutError, match=r"refs\(unc\).p"):
        RRSISD(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        RefSegRS(tmp_path, "testA")


def test_bad_samples_raise_and_check_reports_all(risbench_root, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(risbench_root, root)
    names = [s.name for s in risbench_samples(size=8)]
    phrases = root / "output_phrase_test.txt"
    lines = phrases.read_text().splitlines()
    (root / "img_rgb" / names[1]).unlink()  # missing image
    (root / "img_rgb" / names[2]).write_bytes(b"not a png at all")  # corrupt image
    Image.new("L", (20, 30)).save(root / "mask" / names[3])  # mask size mismatch
    lines[4] = f"{names[4]}   "  # empty sentence
    phrases.write_text("\n".join(lines) + "\n")

    empty = rf"1 bad annotation[\s\S]*output_phrase_test.txt:5: empty sentence for sample '{Path(names[4]).stem}'"
    with pytest.raises(DatasetError, match=empty):
        RISBench(root, "test")
    ds = RISBench(root, "test", strict=False, image_size=S)
    with pytest.raises(SampleError, match=f"image file not found: .*{names[1]}"):
        ds[1]
    with pytest.raises(SampleError, match=f"cannot read image file .*{names[2]}"):
        ds[2]
    with pytest.raises(SampleError, match=rf"mask .*{names[3]} is 30x20 .*{SIZE}x{SIZE}.*never resized"):
        ds[3]
    with pytest.raises(SampleError, match="empty sentence"):
        ds[4]
    ds[5]  # the others still read
    report = check_dataset(ds)
    assert not report.ok and report.total == 15
    assert [p.id for p in report.problems] == [Path(n).stem for n in names[1:5]]
    assert [p.index for p in report.problems] == [1, 2, 3, 4]
    status = check_cli.main(["--dataset", "risbench", "--root", str(root), "--split", "test", "--no-progress"])
    assert status == 1
    out = capsys.readouterr().out
    assert "15 samples, 4 bad" in out and names[2] in out


def test_check_cli_ok_and_missing_split(risbench_root, capsys):
    status = check_cli.main(["--dataset", "risbench", "--root", str(risbench_root), "--split", "test", "--no-progress"])
    assert status == 0
    assert "15 samples, 0 bad" in capsys.readouterr().out
    assert check_cli.main(["--dataset", "risbench", "--root", str(risbench_root), "--no-progress"]) == 1
    assert "output_phrase_train.txt" in capsys.readouterr().err


def test_rrsisd_dangling_annotation_reported(rrsisd):
    refs = [dict(r) for r in rrsisd.refs]
    victim = next(k for k, r in enumerate(refs) if r["split"] == "test" and k >= 2 and len(r["sentences"]) == 1)
    refs[victim]["ann_id"] = -5
    index = sum(len(r["sentences"]) for r in refs[:victim] if r["split"] == "test")
    with (rrsisd.root / "rrsisd" / "refs(dangling).p").open("wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    with pytest.raises(DatasetError, match="ann_id -5 not in .*instances.json"):
        RRSISD(rrsisd.root, "test", refs_file="refs(dangling).p")
    report = check_dataset(RRSISD(rrsisd.root, "test", refs_file="refs(dangling).p", strict=False))
    assert len(report.problems) == 1 and report.problems[0].index == index
    assert report.problems[0].id == f"{refs[victim]['ref_id']}_{refs[victim]['sentences'][0]['sent_id']}"


def test_rrsisd_rle_of_another_size_names_the_annotation(rrsisd, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(rrsisd.root, root)
    instances = dict(rrsisd.instances)
    ann = dict(instances["annotations"][0])
    ann["segmentation"] = [coco_rle(np.ones((10, 12), bool))]
    instances["annotations"] = [ann, *instances["annotations"][1:]]
    (root / "rrsisd" / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    ds = RRSISD(root, "test", image_size=S)
    with pytest.raises(SampleError, match=rf"bad segmentation of annotation {ann['id']} .*RLE size 10x12 differs"):
        ds[0]
