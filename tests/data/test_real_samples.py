"""The readers and the RLE codec on the genuine sample annotations of the three benchmarks.

The annotations (sentences, COCO RLE masks and an RRSIS-D refs pickle copied from public
repositories; sources and licences in their ``SOURCES.md``) are not part of this repository: they
are read from ``../shared/data/real-samples/`` beside it, and this module is skipped without them.
They are laid out in each dataset's format in temporary folders, with generated pictures (no
genuine picture is available).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uncertainty_rrsis.data import RRSISD, RefSegRS, RISBench, check_dataset
from uncertainty_rrsis.data._rle import decode_counts, encode_counts, rle_decode, rle_encode

from helpers.datasets import (
    build_real_rrsisd,
    coco_decode,
    load_real_jsonl,
    load_real_refs,
    make_tokenizer,
    real_phrase_samples,
    requires_real_samples,
    write_refsegrs,
    write_risbench,
)

pytestmark = [
    requires_real_samples,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

S = 32


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    sentences = [item["sent"] for group in ("risbench", "refsegrs", "rrsisd") for item in load_real_jsonl(group)]
    sentences += [s["raw"] for ref in load_real_refs() for s in ref["sentences"]]
    return make_tokenizer(tmp_path_factory.mktemp("tok"), sentences)


def test_rle_matches_pycocotools_on_every_real_mask():
    rles = [i["segmentation"] for g in ("risbench", "refsegrs") for i in load_real_jsonl(g)]
    rles += [i["segmentation"][0] for i in load_real_jsonl("rrsisd")]
    assert len(rles) == 25
    for rle in rles:
        ours = rle_decode(rle)
        assert ours.shape == tuple(rle["size"])
        np.testing.assert_array_equal(ours, coco_decode(rle))
        assert ours.any()
        assert rle_encode(ours)["counts"] == rle["counts"]  # byte-identical re-encoding
        assert encode_counts(decode_counts(rle["counts"])) == rle["counts"]


def test_risbench_reader_on_real_lines(tmp_path, tokenizer):
    samples = real_phrase_samples("risbench")
    write_risbench(tmp_path, samples)
    ds = RISBench(tmp_path, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert len(ds) == len(samples) == 15
    for i, expected in enumerate(samples):
        s = ds[i]
        assert s["id"] == Path(expected.name).stem and s["sentence"] == expected.sentence
        assert s["orig_size"] == (512, 512)
        np.testing.assert_array_equal(s["orig_mask"].numpy(), expected.mask)  # 3-channel mask file
        np.testing.assert_array_equal(s["text_padding_mask"].numpy(), (s["input_ids"] == 0).numpy())
    assert "The  small" in ds[9]["sentence"]  # the double space of test_9_7.png survives
    long = ds[0]  # a 26-word sentence: cut to 20 ids, [CLS] ... [SEP], no padding
    assert len(samples[0].sentence.split()) > 20 and not long["text_padding_mask"].any()
    assert long["input_ids"][0] == tokenizer.cls_token_id and long["input_ids"][-1] == tokenizer.sep_token_id
    short = ds[1]
    n = int((~short["text_padding_mask"]).sum())
    assert n == len(tokenizer(samples[1].sentence)["input_ids"]) < 20 and short["text_padding_mask"][n:].all()
    assert check_dataset(ds).ok


def test_refsegrs_reader_on_real_lines(tmp_path, tokenizer):
    samples = real_phrase_samples("refsegrs")
    write_refsegrs(tmp_path, samples)
    ds = RefSegRS(tmp_path, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    assert [ds[i]["sentence"] for i in range(len(ds))] == [s.sentence for s in samples]
    for i, expected in enumerate(samples):
        s = ds[i]
        assert s["id"] == expected.name and s["orig_size"] == (512, 512)
        np.testing.assert_array_equal(s["orig_mask"].numpy(), expected.mask)  # 40 and 50 < 51 are background
    assert ds[1]["sentence"] == "vehicle"


def test_rrsisd_reader_on_the_real_refs_pickle(tmp_path, tokenizer):
    folder = build_real_rrsisd(tmp_path)
    ds = RRSISD(tmp_path, "test", tokenizer=tokenizer, image_size=S, return_orig_mask=True)
    refs = folder.refs
    assert len(ds) == 40 == sum(len(r["sentences"]) for r in refs)
    real = {item["ann_id"]: item for item in load_real_jsonl("rrsisd")}
    assert len(real) == 3
    seen_real = 0
    for i, ref in enumerate(refs):
        s = ds[i]
        assert s["id"] == f"{ref['ref_id']}_{ref['sentences'][0]['sent_id']}"
        assert s["sentence"] == ref["sentences"][0]["raw"]
        np.testing.assert_array_equal(s["orig_mask"].numpy(), folder.masks[ref["ann_id"]])
        if ref["ann_id"] in real:  # the pickle and the jsonl agree on sentence and category
            seen_real += 1
            item = real[ref["ann_id"]]
            assert s["orig_size"] == (800, 800) and s["sentence"] == item["sent"]
            assert s["tags"] == {"category": item["category_name"]}
            np.testing.assert_array_equal(s["orig_mask"].numpy(), coco_decode(item["segmentation"][0]))
        assert s["mask"].shape == (S, S) and s["mask"].any()
    assert seen_real == 3
    assert set(folder.encodings.values()) == {"rle", "polygon"}
