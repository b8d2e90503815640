"""Readers on fixture folders written in each dataset's exact format from real annotations."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

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
    load_jsonl,
    make_tokenizer,
    real_refs,
)

S = 32
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def risbench_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("risbench")
    build_risbench(root)
    return root


@pytest.fixture(scope="module")
def refsegrs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("refsegrs")
    build_refsegrs(root)
    return root


@pytest.fixture(scope="module")
def rrsisd_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("rrsisd")
    info = build_rrsisd(root)
    return root, info


def _nearest(mask: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127


def _coco(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


# ---------------------------------------------------------------- COCO RLE (pure numpy)
def test_rle_matches_pycocotools_on_every_real_mask():
    rles = [i["segmentation"] for g in ("risbench", "refsegrs") for i in load_jsonl(g)]
    rles += [i["segmentation"][0] for i in load_jsonl("rrsisd")]
    assert len(rles) == 25
    for rle in rles:
        ours = rle_decode(rle)
        assert ours.shape == tuple(rle["size"])
        np.testing.assert_array_equal(ours, _coco(rle))
        assert ours.any()
        assert rle_encode(ours)["counts"] == rle["counts"]  # byte-identical re-encoding
    assert encode_counts(decode_counts(rles[0]["counts"])) == rles[0]["counts"]


def test_rle_roundtrip_edge_cases():
    for m in (np.zeros((3, 4), bool), np.ones((3, 4), bool), np.eye(5, dtype=bool)):
        enc = rle_encode(m)
        np.testing.assert_array_equal(rle_decode(enc), m)
        np.testing.assert_array_equal(_coco(enc), m)
    with pytest.raises(ValueError, match="pixels"):
        rle_decode({"size": [4, 4], "counts": [3, 2]})


# ---------------------------------------------------------------------------- RISBench
def test_risbench_samples(risbench_root, tokenizer):
    items = load_jsonl("risbench")
    ds = RISBench(risbench_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert len(ds) == 15
    for i, item in enumerate(items):
        s = ds[i]
        assert s["id"] == Path(item["file_name"]).stem
        assert s["sentence"] == item["sent"]  # inner double spaces survive
        assert s["image"].shape == (3, S, S) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (S, S) and s["mask"].dtype == torch.bool
        assert s["orig_size"] == (512, 512)
        real = rle_decode(item["segmentation"])
        np.testing.assert_array_equal(s["orig_mask"].numpy(), real)  # 3-channel mask, channel 0 > 0
        np.testing.assert_array_equal(s["mask"].numpy(), _nearest(real, S))
        assert s["input_ids"].shape == (20,) and s["input_ids"].dtype == torch.long
        assert s["text_padding_mask"].dtype == torch.bool
        np.testing.assert_array_equal(s["text_padding_mask"].numpy(), (s["input_ids"] == 0).numpy())
        assert s["tags"] == {}
    assert "  small" in ds[9]["sentence"]
    long = ds[0]  # 28 words: cut to 20 ids, [CLS] ... [SEP], no padding
    assert not long["text_padding_mask"].any()
    assert long["input_ids"][0] == tokenizer.cls_token_id and long["input_ids"][-1] == tokenizer.sep_token_id
    short = ds[1]
    n = int((~short["text_padding_mask"]).sum())
    assert 2 < n < 20 and short["text_padding_mask"][n:].all() and not short["text_padding_mask"][:n].any()


def test_image_resize_and_normalisation_are_lavt_exact(risbench_root):
    ds = RISBench(risbench_root, "test", image_size=S)
    raw = Image.open(risbench_root / "img_rgb" / "test_0_0.png").convert("RGB")
    expected = np.asarray(raw.resize((S, S), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (expected - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(ds[0]["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    torch_ds = RISBench(risbench_root, "test", image_size=(S, 2 * S), resize_backend="torch")
    assert torch_ds[0]["image"].shape == (3, S, 2 * S) and torch_ds[0]["mask"].shape == (S, 2 * S)
    assert "input_ids" not in torch_ds[0]  # no tokenizer -> no ids


def test_risbench_val_warning_once(tmp_path):
    build_risbench(tmp_path)
    lines = (tmp_path / "output_phrase_test.txt").read_text().splitlines()
    (tmp_path / "output_phrase_train.txt").write_text("\n".join(lines[:10]) + "\n")
    (tmp_path / "output_phrase_val.txt").write_text("\n".join(lines[5:12]) + "\n")
    with pytest.warns(UserWarning, match="5 of its 7 val images are also in output_phrase_train.txt"):
        RISBench(tmp_path, "val", image_size=S)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RISBench(tmp_path, "val", image_size=S)  # once per root
        RISBench(tmp_path, "train", image_size=S)


# ---------------------------------------------------------------------------- RefSegRS
def test_refsegrs_samples(refsegrs_root, tokenizer):
    items = load_jsonl("refsegrs")
    ds = RefSegRS(refsegrs_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert [s for s in (ds[i]["sentence"] for i in range(len(ds)))] == [i["sent"] for i in items]
    for i, item in enumerate(items):
        s = ds[i]
        assert s["id"] == item["image_id"]
        np.testing.assert_array_equal(
            s["orig_mask"].numpy(), rle_decode(item["segmentation"])
        )  # 40 < 50 is bg
        assert s["orig_size"] == (512, 512)
    assert ds[1]["sentence"] == "vehicle"


# ----------------------------------------------------------------------------- RRSIS-D
def test_rrsisd_eval_samples(rrsisd_fixture, tokenizer):
    root, info = rrsisd_fixture
    ds = RRSISD(root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    refs = info["refs"]
    assert len(ds) == 40 == sum(len(r["sentences"]) for r in refs)
    real = {item["ann_id"]: item for item in load_jsonl("rrsisd")}
    inst = {a["id"]: a for a in info["instances"]["annotations"]}
    seen_polygon = seen_rle = 0
    for i, ref in enumerate(refs):
        s = ds[i]
        assert s["id"] == f"{ref['ref_id']}_{ref['sentences'][0]['sent_id']}"
        assert s["sentence"] == ref["sentences"][0]["raw"]
        if ref["ann_id"] in real:
            item = real[ref["ann_id"]]
            assert s["orig_size"] == (800, 800)
            assert s["tags"] == {"category": item["category_name"]}
            np.testing.assert_array_equal(s["orig_mask"].numpy(), _coco(item["segmentation"][0]))
        elif ref["ann_id"] in info["polygon_ids"]:
            seen_polygon += 1
            h, w = s["orig_size"]
            poly = inst[ref["ann_id"]]["segmentation"]
            expected = coco_mask.decode(coco_mask.frPyObjects(poly, h, w))[..., 0].astype(bool)
            np.testing.assert_array_equal(s["orig_mask"].numpy(), expected)
            assert expected.sum() > 100
        else:
            seen_rle += 1
            np.testing.assert_array_equal(s["orig_mask"].numpy(), info["masks"][ref["ann_id"]])
        assert s["mask"].shape == (S, S) and s["mask"].any()
    assert seen_polygon > 5 and seen_rle > 5


def test_rrsisd_train_mode_draws_one_sentence_per_ref(rrsisd_fixture, tmp_path):
    root, _ = rrsisd_fixture
    refs = real_refs()
    extra = dict(refs[0], split="train", ref_id=999001)
    extra["sentences"] = [
        dict(refs[0]["sentences"][0], sent_id=1, raw="the gray windmill"),
        dict(refs[0]["sentences"][0], sent_id=2, raw="a small windmill"),
    ]
    with (root / "rrsisd" / "refs(extra).p").open("wb") as fh:
        pickle.dump([*refs, extra], fh, protocol=4)
    train = RRSISD(root, "train", refs_file="refs(extra).p", image_size=S)
    assert len(train) == 1 and train[0]["id"] == "999001"
    torch.manual_seed(0)
    drawn = {train[0]["sentence"] for _ in range(30)}
    assert drawn == {"the gray windmill", "a small windmill"}
    every = RRSISD(root, "train", refs_file="refs(extra).p", image_size=S, all_sentences=True)
    assert [every[i]["id"] for i in range(2)] == ["999001_1", "999001_2"]
    assert len(RRSISD(root, "test", image_size=S, all_sentences=False)) == 40


def test_rrsisd_refs_pickle_cannot_run_code(rrsisd_fixture, tmp_path):
    root, _ = rrsisd_fixture
    with (root / "rrsisd" / "refs(evil).p").open("wb") as fh:
        pickle.dump([{"x": Path("a")}], fh)
    with pytest.raises(DatasetLayoutError, match="only lists, dicts"):
        RRSISD(root, "test", refs_file="refs(evil).p")


# ------------------------------------------------------------------------------ collate
def test_collate_batches_and_pads(risbench_root, tokenizer):
    ds = RISBench(risbench_root, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    samples = [ds[i] for i in range(3)]
    samples[1]["input_ids"] = samples[1]["input_ids"][:12]
    samples[1]["text_padding_mask"] = samples[1]["text_padding_mask"][:12]
    batch = collate(samples)
    assert batch["image"].shape == (3, 3, S, S) and batch["mask"].shape == (3, S, S)
    assert batch["mask"].dtype == torch.bool
    assert batch["input_ids"].shape == (3, 20) and batch["text_padding_mask"].shape == (3, 20)
    assert batch["text_padding_mask"][1, 12:].all() and (batch["input_ids"][1, 12:] == 0).all()
    assert batch["orig_size"].tolist() == [[512, 512]] * 3
    assert isinstance(batch["orig_mask"], list) and batch["orig_mask"][0].shape == (512, 512)
    assert batch["id"] == [s["id"] for s in samples] and len(batch["sentence"]) == 3
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


def test_bad_samples_raise_and_check_reports_all(tmp_path, capsys):
    build_risbench(tmp_path)
    phrases = tmp_path / "output_phrase_test.txt"
    lines = phrases.read_text().splitlines()
    (tmp_path / "img_rgb" / "test_1_0.png").unlink()  # missing image
    (tmp_path / "img_rgb" / "test_1_1.png").write_bytes(b"not a png at all")  # corrupt image
    Image.new("L", (20, 30)).save(tmp_path / "mask" / "test_3_0.png")  # mask size mismatch
    lines[4] = "test_4_2.png   "  # empty sentence
    phrases.write_text("\n".join(lines) + "\n")

    with pytest.raises(
        DatasetError, match=r"1 bad annotation[\s\S]*output_phrase_test.txt:5: empty sentence"
    ):
        RISBench(tmp_path, "test")
    ds = RISBench(tmp_path, "test", strict=False, image_size=S)
    with pytest.raises(SampleError, match="image file not found: .*test_1_0.png"):
        ds[1]
    with pytest.raises(SampleError, match="cannot read image file .*test_1_1.png"):
        ds[2]
    with pytest.raises(SampleError, match="mask .*test_3_0.png is 30x20 .*512x512.*never resized"):
        ds[3]
    with pytest.raises(SampleError, match="empty sentence"):
        ds[4]
    report = check_dataset(ds)
    assert not report.ok and report.total == 15
    assert [p.id for p in report.problems] == ["test_1_0", "test_1_1", "test_3_0", "test_4_2"]
    assert (
        check_cli.main(["--dataset", "risbench", "--root", str(tmp_path), "--split", "test", "--no-progress"])
        == 1
    )
    out = capsys.readouterr().out
    assert "15 samples, 4 bad" in out and "test_1_1.png" in out


def test_check_cli_ok_and_missing_split(risbench_root, capsys):
    assert (
        check_cli.main(
            ["--dataset", "risbench", "--root", str(risbench_root), "--split", "test", "--no-progress"]
        )
        == 0
    )
    assert "15 samples, 0 bad" in capsys.readouterr().out
    assert check_cli.main(["--dataset", "risbench", "--root", str(risbench_root), "--no-progress"]) == 1
    assert "output_phrase_train.txt" in capsys.readouterr().err


def test_rrsisd_dangling_annotation_reported(rrsisd_fixture, tmp_path):
    root, _ = rrsisd_fixture
    refs = real_refs()
    refs[3] = dict(refs[3], ann_id=-5)
    with (root / "rrsisd" / "refs(dangling).p").open("wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    with pytest.raises(DatasetError, match="ann_id -5 not in .*instances.json"):
        RRSISD(root, "test", refs_file="refs(dangling).p")
    report = check_dataset(RRSISD(root, "test", refs_file="refs(dangling).p", strict=False))
    assert len(report.problems) == 1 and report.problems[0].index == 3
