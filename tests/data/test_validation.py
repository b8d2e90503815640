"""Bad inputs fail loudly: damaged and truncated images, pixel formats the readers do not take,
annotation values of the wrong type, names outside the dataset, empty splits and all-empty
targets, RLE masks that are damaged or too large. Every folder is written in ``tmp_path`` by
``helpers.datasets`` in the datasets' exact formats.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncertainty_rrsis.data import (
    RRSISD,
    DatasetError,
    DatasetLayoutError,
    RefSegRS,
    RISBench,
    SampleError,
    check_dataset,
    image_to_rgb,
    read_image,
)
from uncertainty_rrsis.data import check as check_cli
from uncertainty_rrsis.data._jpeg import JpegDataError, verify_jpeg
from uncertainty_rrsis.data._rle import (
    MAX_MASK_PIXELS,
    encode_counts,
    rle_decode,
    segmentation_to_mask,
)

from helpers.datasets import (
    build_rrsisd,
    coco_rle,
    damage_jpeg,
    jpeg_bytes,
    png16_bytes,
    refsegrs_samples,
    risbench_samples,
    textured_image,
    truncate_file,
    write_float_tiff,
    write_refsegrs,
    write_risbench,
    write_rrsisd_annotations,
)

S = 32
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def rrsisd(tmp_path_factory):
    return build_rrsisd(tmp_path_factory.mktemp("rrsisd"))


@pytest.fixture()
def rrsisd_copy(rrsisd, tmp_path):
    """A fresh copy of the RRSIS-D folder and deep copies of its refs and instances to spoil."""
    root = tmp_path / "rrsisd"
    shutil.copytree(rrsisd.root, root)
    return root, copy.deepcopy(rrsisd.refs), copy.deepcopy(rrsisd.instances)


def _check(root: Path, dataset: str, split: str, capsys) -> tuple[int, str]:
    status = check_cli.main(["--dataset", dataset, "--root", str(root), "--split", split, "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


# ------------------------------------------------------------------ damaged and truncated images
def test_damaged_jpeg_is_refused_although_pillow_decodes_it(tmp_path):
    picture = textured_image(256, 256, seed=0)
    good = jpeg_bytes(picture, quality=90)
    path = tmp_path / "scene.jpg"
    path.write_bytes(damage_jpeg(good, seed=1))
    with Image.open(path) as img:  # the problem: Pillow decodes it without a word
        img.load()
        decoded = np.asarray(img.convert("RGB")).astype(int)
    reference = np.asarray(Image.open(io.BytesIO(good)).convert("RGB")).astype(int)
    assert (np.abs(decoded - reference).max(axis=2) > 30).mean() > 0.05
    with pytest.raises(SampleError, match=r"corrupt image file .*scene\.jpg: its JPEG data is damaged"):
        read_image(path)
    assert read_image(path, verify=False).size == (256, 256)  # the documented opt-out


@pytest.mark.parametrize("seed", range(12))
def test_jpeg_check_finds_overwritten_bytes(seed):
    """64 bytes overwritten in the compressed data of a JPEG saved at quality 90-95 (any subsampling).

    Shorter damage, and damage in files saved at low quality, is not always found: the Huffman
    decoder can fall back into step and leave every check satisfied (docs/datasets.md gives the rates).
    """
    good = jpeg_bytes(textured_image(96, 128, seed=seed), quality=(90, 95)[seed % 2], subsampling=seed % 3)
    assert verify_jpeg(good) is None
    with pytest.raises(JpegDataError):
        verify_jpeg(damage_jpeg(good, seed=seed))
    with pytest.raises(JpegDataError, match="truncated|premature"):
        verify_jpeg(good[: len(good) * 2 // 3])


@pytest.mark.parametrize(
    "options",
    [dict(quality=q, subsampling=s, optimize=o) for q in (5, 50, 95, 100) for s in (0, 1, 2) for o in (False, True)]
    + [dict(quality=90, restart_marker_blocks=5), dict(quality=75, restart_marker_rows=1)],
    ids=str,
)
def test_jpeg_check_accepts_sound_files(options):
    for height, width in ((1, 1), (8, 8), (17, 9), (61, 83)):
        assert verify_jpeg(jpeg_bytes(textured_image(height, width, seed=height), **options)) is None
    for colour in ((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 0, 255)):  # the ends of the DC range
        flat = np.zeros((24, 40, 3), np.uint8) + np.asarray(colour, np.uint8)
        assert verify_jpeg(jpeg_bytes(flat, **options)) is None


def test_jpeg_check_other_codings(tmp_path):
    grey = jpeg_bytes(textured_image(40, 56, seed=3)[..., 0], quality=80)
    assert verify_jpeg(grey) is None
    buffer = io.BytesIO()
    Image.fromarray(textured_image(40, 56, seed=3)).convert("CMYK").save(buffer, "JPEG")
    assert verify_jpeg(buffer.getvalue()) is None
    progressive = jpeg_bytes(textured_image(40, 56, seed=3), progressive=True)
    assert verify_jpeg(progressive) == "progressive"  # not checked; still decoded strictly
    path = tmp_path / "progressive.jpg"
    path.write_bytes(progressive)
    assert read_image(path).size == (56, 40)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_truncated_files_raise(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(textured_image(64, 64, seed=4)).save(path, format=fmt)
    truncate_file(path)
    with pytest.raises(SampleError, match=rf"cut\.{fmt.lower()}"):
        read_image(path)


# ----------------------------------------------------------------------- bit depths and modes
def test_sixteen_bit_pictures_are_refused_with_a_way_to_convert(tmp_path):
    rng = np.random.default_rng(0)
    twelve_bit = rng.integers(0, 4096, (20, 30, 3)).astype(np.uint16)  # near black as 8-bit high bytes
    (tmp_path / "rgb16.png").write_bytes(png16_bytes(twelve_bit))
    (tmp_path / "grey16.png").write_bytes(png16_bytes(twelve_bit[..., 0] * 16))  # clipped to white before
    Image.fromarray(twelve_bit[..., 0]).save(tmp_path / "grey16.tif")
    for name in ("rgb16.png", "grey16.png", "grey16.tif"):
        with pytest.raises(SampleError, match=rf"{name} has 16 bits per sample[\s\S]*WHITE[\s\S]*4095"):
            read_image(tmp_path / name)
    with pytest.raises(SampleError, match="image 3 has 16 bits"):
        image_to_rgb(Image.fromarray(twelve_bit[..., 0]), source="image 3")


def test_float_pictures_follow_the_zero_to_one_rule(tmp_path):
    values = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    write_float_tiff(tmp_path / "ok.tif", values)
    got = np.asarray(read_image(tmp_path / "ok.tif"))
    expected = np.rint(values * 255).astype(np.uint8)
    assert got.shape == (20, 30, 3) and all(np.array_equal(got[..., c], expected) for c in range(3))
    write_float_tiff(tmp_path / "wide.tif", values * 1000)
    with pytest.raises(SampleError, match=r"wide\.tif is a float picture with values from 0 to 1000.*\[0, 1\]"):
        read_image(tmp_path / "wide.tif")
    values[3, 4], values[5, 6] = np.nan, np.inf
    write_float_tiff(tmp_path / "nan.tif", values)
    with pytest.raises(SampleError, match=r"nan\.tif has 2 NaN or infinite pixel"):
        read_image(tmp_path / "nan.tif")


def test_eight_bit_pictures_read_as_before(tmp_path):
    picture = textured_image(24, 36, seed=5)
    cases = {
        "rgb.png": Image.fromarray(picture),
        "grey.png": Image.fromarray(picture[..., 0]),
        "palette.png": Image.fromarray(picture).convert("P"),
        "rgba.png": Image.fromarray(np.dstack([picture, picture[..., :1]])),
        "la.png": Image.fromarray(np.dstack([picture[..., 0], picture[..., 1]])),
        "rgb.tif": Image.fromarray(picture),
        "rgb.jpg": Image.fromarray(picture),
        "cmyk.jpg": Image.fromarray(picture).convert("CMYK"),
        "bilevel.png": Image.fromarray(picture[..., 0] > 128),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        with Image.open(tmp_path / name) as plain:
            expected = np.asarray(plain.convert("RGB"))
        assert np.array_equal(np.asarray(read_image(tmp_path / name)), expected), name


def test_sixteen_bit_colour_mask_is_refused_and_grey_is_read_as_stored(tmp_path):
    mask = np.zeros((20, 30), np.uint16)
    mask[5:10, 5:20] = 1
    (tmp_path / "mask_rgb16.png").write_bytes(png16_bytes(np.dstack([mask * 65535] * 3)))
    from uncertainty_rrsis.data._io import read_mask_file as read_mask

    with pytest.raises(SampleError, match=r"mask_rgb16\.png stores 16-bit colour"):
        read_mask(tmp_path / "mask_rgb16.png", threshold=0, layout="")
    (tmp_path / "mask_grey16.png").write_bytes(png16_bytes(mask * 300))
    assert np.array_equal(read_mask(tmp_path / "mask_grey16.png", threshold=50, layout=""), mask > 0)


def test_bad_images_are_reported_by_the_check_tool(tmp_path, capsys):
    root = tmp_path / "risbench"
    samples = risbench_samples(size=48)[:6]
    write_risbench(root, samples)
    names = [s.name for s in samples]
    picture = textured_image(48, 48, seed=6)
    (root / "img_rgb" / names[0]).write_bytes(damage_jpeg(jpeg_bytes(picture, quality=95), seed=2))  # JPEG data
    (root / "img_rgb" / names[1]).write_bytes(png16_bytes(picture.astype(np.uint16) * 16))
    write_float_tiff(root / "img_rgb" / names[2], np.full((48, 48), 3.0))
    truncate_file(root / "img_rgb" / names[3])
    dataset = RISBench(root, "test", strict=False, image_size=S, verify_images=False)
    report = check_dataset(dataset)  # checks JPEG data even for a dataset built without it
    assert [p.index for p in report.problems] == [0, 1, 2, 3] and dataset.verify_images is False
    assert "JPEG data is damaged" in report.problems[0].message
    assert "16 bits per sample" in report.problems[1].message
    assert "float picture with values from 3 to 3" in report.problems[2].message
    assert names[3] in report.problems[3].message
    status, out = _check(root, "risbench", "test", capsys)
    assert status == 1 and "6 samples, 4 bad" in out


def test_rrsisd_damaged_jpeg_raises_on_access(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    info = instances["images"][0]
    path = root / "images" / "rrsisd" / "JPEGImages" / info["file_name"]
    path.write_bytes(damage_jpeg(jpeg_bytes(textured_image(info["height"], info["width"], seed=7)), seed=3))
    ds = RRSISD(root, "test", image_size=S)
    with pytest.raises(SampleError, match=rf"{info['file_name']}: its JPEG data is damaged"):
        ds[0]
    ds[2]


# --------------------------------------------------------------------------- annotation types
@pytest.mark.parametrize(
    ("value", "shown"), [(None, "NoneType None"), (["The", "ship"], "list"), (b"The ship", "bytes")]
)
def test_rrsisd_sentence_of_the_wrong_type(rrsisd_copy, value, shown, capsys):
    root, refs, instances = rrsisd_copy
    ref = refs[1]  # test ref 101, two sentences
    ref["sentences"][1]["raw"] = value
    write_rrsisd_annotations(root, refs, instances)
    pattern = rf"refs\(unc\)\.p ref_id=101: sentence 1 \(sent_id=\d+\): 'raw' must be a string; got {shown}"
    with pytest.raises(DatasetError, match=pattern):
        RRSISD(root, "test")
    ds = RRSISD(root, "test", strict=False, image_size=S)
    with pytest.raises(SampleError, match=pattern):
        ds[1]
    assert str(value) not in {ds.records[i].sentences[0] for i in range(len(ds))}  # never coerced
    status, out = _check(root, "rrsisd", "test", capsys)
    assert status == 1 and "must be a string" in out


def test_rrsisd_ids_names_and_segmentations_of_the_wrong_type(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    refs[0]["ann_id"] = [9000]  # unhashable: used to crash the constructor with a TypeError
    refs[2]["ref_id"] = {"id": 102}
    refs[3]["sentences"] = "Two storage tanks"
    instances["images"][4]["file_name"] = 3004
    instances["annotations"][5]["segmentation"] = [{"size": [48, 64], "counts": 17}]
    instances["annotations"][6]["segmentation"] = [["1", "2", "3", "4", "5", "6"]]
    instances["images"][7]["height"] = "64"
    write_rrsisd_annotations(root, refs, instances)
    with pytest.raises(DatasetError) as info:
        RRSISD(root, "test")
    text = str(info.value)
    for expected in (
        "ref_id=100: ann_id must be an integer or a string; got list [9000]",
        "ref #2 (in file order): ref_id must be an integer or a string; got dict",
        "ref_id=103: 'sentences' must be a list; got str",
        "ref_id=104: file_name must be a string; got int 3004",
        "annotation id=9005 (", "RLE 'counts' must be a string (compressed) or a list of integers; got int",
        "annotation id=9006 (", "polygon 0 holds values that are not finite numbers",
        "image id=3007: height must be a positive integer; got str '64'",
    ):
        assert expected in text, expected
    ds = RRSISD(root, "test", strict=False, image_size=S)
    report = check_dataset(ds)
    assert len(report.problems) == len(ds) - 2  # test refs 0 and 2-7 are bad; ref 1's two sentences are fine
    assert any(p.id.startswith("ref2_") for p in report.problems)


def test_risbench_tags_line_of_the_wrong_type(tmp_path):
    root = tmp_path / "risbench"
    samples = risbench_samples(size=16)[:3]
    write_risbench(root, samples)
    (root / "tags_test.jsonl").write_text(
        json.dumps({"name": samples[0].name, "tags": {"category": "ship"}}) + "\n"
        + json.dumps({"name": [samples[1].name], "tags": "ship"}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetLayoutError, match=r"tags_test\.jsonl:2: .*got name list .*tags str"):
        RISBench(root, "test")


# ------------------------------------------------------------------------- names outside root
def test_names_outside_the_dataset_are_not_read(tmp_path, capsys):
    root = tmp_path / "risbench"
    samples = risbench_samples(size=16)[:3]
    write_risbench(root, samples)
    for folder in ("img_rgb", "mask"):
        (root / folder / "sub").mkdir()
        shutil.copy(root / folder / samples[0].name, root / folder / "sub" / "inner.png")
    Image.fromarray(textured_image(16, 16, seed=1)).save(tmp_path / "outside.png")  # exists, must not be read
    lines = (root / "output_phrase_test.txt").read_text().splitlines()
    lines += [
        "../../outside.png The secret picture.",
        f"{tmp_path / 'outside.png'} The absolute path.",
        "..\\..\\outside.png A Windows path.",
        "sub/../sub/inner.png A name inside a subfolder.",
    ]
    (root / "output_phrase_test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        RISBench(root, "test")
    text = str(info.value)
    assert "3 bad annotation(s)" in text
    assert "output_phrase_test.txt:4: image name '../../outside.png' points outside" in text
    assert "output_phrase_test.txt:5: image name" in text and "is an absolute path" in text
    assert "output_phrase_test.txt:6: image name '..\\\\..\\\\outside.png' points outside" in text
    ds = RISBench(root, "test", strict=False, image_size=S)
    for index in (3, 4, 5):
        with pytest.raises(SampleError, match="the file is not read"):
            ds[index]
    assert ds[6]["image"].shape == (3, S, S)  # a subfolder inside the dataset is fine
    status, out = _check(root, "risbench", "test", capsys)
    assert status == 1 and "7 samples, 3 bad" in out


def test_rrsisd_file_name_outside_the_image_folder(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    instances["images"][0]["file_name"] = "../../../rrsisd/instances.json"
    instances["images"][2]["file_name"] = "/etc/hostname"
    write_rrsisd_annotations(root, refs, instances)
    with pytest.raises(DatasetError, match=r"(?s)ref_id=100: file_name '\.\./\.\./\.\./rrsisd/instances\.json' "
                                           r"points outside.*ref_id=102: file_name '/etc/hostname' is an absolute"):
        RRSISD(root, "test")


# ----------------------------------------------------------------- empty splits, empty targets
def test_empty_split_is_an_error(tmp_path, capsys):
    root = tmp_path / "risbench"
    write_risbench(root, risbench_samples(size=16)[:2])
    (root / "output_phrase_val.txt").write_text("\n  \n", encoding="utf-8")
    for strict in (True, False):
        with pytest.raises(DatasetError, match=r"risbench val under .* has no samples: .*output_phrase_val\.txt lists"):
            RISBench(root, "val", strict=strict)
    status, out = _check(root, "risbench", "val", capsys)
    assert status == 1 and "has no samples" in out


def test_rrsisd_split_without_refs(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    write_rrsisd_annotations(root, [r for r in refs if r["split"] != "val"], instances)
    with pytest.raises(DatasetError, match=r"has no ref with split == 'val' \(splits found: test, train\)"):
        RRSISD(root, "val")


def test_refsegrs_masks_saved_as_zero_one(tmp_path, capsys):
    root = tmp_path / "refsegrs"
    samples = refsegrs_samples(size=32)
    write_refsegrs(root, samples)
    for s in samples:  # what a conversion script that forgot "* 255" writes
        Image.fromarray(s.mask.astype(np.uint8)).save(root / "masks" / f"{s.name}.tif")
    expected = (r"all 7 target masks of refsegrs test under .* are empty: nothing to segment in any sample; "
                r"RefSegRS masks are 0 / 255 with foreground > 50; the largest value in these mask files is 1 "
                r"- were they saved as 0/1\?")
    with pytest.raises(DatasetError, match=expected):
        RefSegRS(root, "test")
    report = check_dataset(RefSegRS(root, "test", strict=False))
    assert not report.ok and report.problems == [] and len(report.errors) == 1
    assert "were they saved as 0/1?" in str(report)
    status, out = _check(root, "refsegrs", "test", capsys)
    assert status == 1 and "all 7 target masks" in out


def test_blank_risbench_masks(tmp_path):
    root = tmp_path / "risbench"
    samples = risbench_samples(size=16)[:3]
    write_risbench(root, [s.__class__(s.name, s.sentence, np.zeros_like(s.mask)) for s in samples])
    with pytest.raises(DatasetError, match="all 3 target masks .* the largest value in these mask files is 0 - the"
                                           " mask files are blank"):
        RISBench(root, "test")


def test_rrsisd_all_empty_masks(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    for ann in instances["annotations"]:
        info = next(i for i in instances["images"] if i["id"] == ann["image_id"])
        ann["segmentation"] = [coco_rle(np.zeros((info["height"], info["width"]), bool))]
    write_rrsisd_annotations(root, refs, instances)
    with pytest.raises(DatasetError, match=r"all 11 target masks of rrsisd test .* 'segmentation' fields"):
        RRSISD(root, "test")


def test_empty_target_scan_reads_one_mask_of_a_sound_split(tmp_path, monkeypatch):
    """The construction-time check stops at the first non-empty mask: one read on a sound split, and a
    split where most targets are empty (but not all) is accepted."""
    root = tmp_path / "risbench"
    samples = risbench_samples(size=16)
    write_risbench(root, [s if k == 11 else s.__class__(s.name, s.sentence, np.zeros_like(s.mask))
                          for k, s in enumerate(samples)])
    reads = []
    original = RISBench.read_mask
    monkeypatch.setattr(RISBench, "read_mask", lambda self, r: reads.append(r.id) or original(self, r))
    RISBench(root, "test")  # one non-empty target among 15: fine
    assert samples[11].name.removesuffix(".png") in reads
    reads.clear()
    write_risbench(tmp_path / "sound", samples)
    RISBench(tmp_path / "sound", "test")
    assert len(reads) == 1


# ------------------------------------------------------------------------------- RLE errors
def test_negative_rle_run_says_so(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    with pytest.raises(ValueError, match=r"run 1 of 3 is -5 pixels \(runs are lengths, never negative\)"):
        rle_decode({"size": [4, 4], "counts": [10, -5, 11]})
    ann = instances["annotations"][0]  # 800 x 800
    ann["segmentation"] = [{"size": [800, 800], "counts": [320000, -5, 320005]}]
    write_rrsisd_annotations(root, refs, instances)
    ds = RRSISD(root, "test", image_size=S, strict=False)
    with pytest.raises(SampleError, match=r"bad segmentation of annotation 9000 in .*instances\.json .*never "
                                          r"negative.*fix or re-export this annotation"):
        ds[0]


def test_huge_declared_rle_size_is_refused_before_allocating():
    tiny = {"size": [50000, 50000], "counts": encode_counts([50000 * 50000])}  # runs that fit the size
    assert len(tiny["counts"]) < 10  # a few bytes of annotation would make 2.5 GB of mask
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares a 50000x50000 mask \(2500000000 pixels\), more than"):
            rle_decode(tiny)
        with pytest.raises(ValueError, match="RLE size 50000x50000 differs from the image size 40x40"):
            segmentation_to_mask([tiny], 40, 40)
        with pytest.raises(ValueError, match="larger than"):
            segmentation_to_mask([[0, 0, 10, 0, 10, 10]], 50000, 50000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000 and MAX_MASK_PIXELS < 50000 * 50000


def test_rrsisd_huge_declared_image_size(rrsisd_copy):
    root, refs, instances = rrsisd_copy
    instances["images"][2]["height"] = instances["images"][2]["width"] = 50000
    write_rrsisd_annotations(root, refs, instances)
    with pytest.raises(DatasetError, match=r"image id=3002: declares 50000x50000 pixels, more than the"):
        RRSISD(root, "test")
    instances["images"][2]["height"] = instances["images"][2]["width"] = 4000  # plausible, but not the file's
    ann = next(a for a in instances["annotations"] if a["image_id"] == 3002)
    ann["segmentation"] = [{"size": [4000, 4000], "counts": [16_000_000]}]
    write_rrsisd_annotations(root, refs, instances)
    ds = RRSISD(root, "test", strict=False, image_size=S)
    index = next(i for i, r in enumerate(ds.records) if r.id.startswith("102_"))
    with pytest.raises(SampleError, match=r"image id=3002 declares 4000x4000 \(HxW\) but .*03002\.jpg is 48x64"):
        ds[index]


# --------------------------------------------------------------------------------------------
# every sentence counts once
# --------------------------------------------------------------------------------------------


def test_a_line_given_twice_is_read_once_and_reported(tmp_path):
    from uncertainty_rrsis.data import DuplicateEntryWarning

    root = tmp_path / "risbench"
    write_risbench(root, risbench_samples(size=S))
    phrases = root / "output_phrase_test.txt"
    lines = phrases.read_text().splitlines()
    phrases.write_text("\n".join([*lines, lines[0]]) + "\n")  # the first line again, at the end
    with pytest.warns(DuplicateEntryWarning, match=rf"at {phrases}:{len(lines) + 1} .* repeats {phrases}:1 "):
        dataset = RISBench(root, "test", image_size=S)
    assert len(dataset) == len(lines) and not any("#" in r.id for r in dataset.records)
    report = check_dataset(RISBench(root, "test", image_size=S, strict=False))
    assert report.ok and len(report.warnings) == 1 and "duplicate entry, read once" in str(report)


def test_an_rrsisd_ref_listed_twice_is_read_once(rrsisd_copy):
    from uncertainty_rrsis.data import DuplicateEntryWarning

    root, refs, instances = rrsisd_copy
    tests = [r for r in refs if r["split"] == "test"]
    sentences = sum(len(r["sentences"]) for r in tests)
    write_rrsisd_annotations(root, [*refs, copy.deepcopy(tests[1])], instances)  # ref 101 twice
    with pytest.warns(DuplicateEntryWarning, match=r"2 duplicate entries read once"):
        dataset = RRSISD(root, "test", image_size=S)
    assert len(dataset) == sentences  # each of the ref's two sentences once
    report = check_dataset(RRSISD(root, "test", image_size=S, strict=False))
    assert len(report.warnings) == 2 and "ref_id=101" in report.warnings[0]


# ------------------------------------------------------------------ the JPEG check, once per unchanged file
def _count_checks(monkeypatch) -> list[int]:
    from uncertainty_rrsis.data import _io

    calls = [0]
    real = _io.verify_jpeg

    def counting(data):
        calls[0] += 1
        return real(data)

    monkeypatch.setattr(_io, "verify_jpeg", counting)
    return calls


def test_a_file_that_passed_is_not_checked_again_until_it_changes(tmp_path, monkeypatch):
    from uncertainty_rrsis.data import CheckedFiles

    calls = _count_checks(monkeypatch)
    good = jpeg_bytes(textured_image(64, 64, seed=4), quality=92)
    path = tmp_path / "scene.jpg"
    path.write_bytes(good)
    checked = CheckedFiles()
    for _ in range(3):
        read_image(path, checked=checked)
    assert calls[0] == 1 and len(checked) == 1
    # the same size, another modification time: checked again, and refused
    path.write_bytes(damage_jpeg(good, seed=2))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    for _ in range(2):  # a file that failed is never recorded
        with pytest.raises(SampleError, match="its JPEG data is damaged"):
            read_image(path, checked=checked)
    assert calls[0] == 3
    path.write_bytes(good)  # repaired: checked, and recorded again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    read_image(path, checked=checked)
    read_image(path, checked=checked)
    assert calls[0] == 4
    read_image(path)  # without a record every read checks
    assert calls[0] == 5


def test_the_record_file_is_shared_by_processes_and_loader_workers(tmp_path, rrsisd, monkeypatch):
    import pickle
    import sqlite3

    from torch.utils.data import DataLoader

    from uncertainty_rrsis.data import CheckedFiles, _io, collate

    record = tmp_path / "cache" / "checked_images.sqlite"
    dataset = RRSISD(rrsisd.root, "train", image_size=S, check_record=record)
    # the first epoch in two worker processes: each checks its files and writes them into the record
    assert sum(b["image"].shape[0] for b in DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)) \
        == len(dataset)
    with sqlite3.connect(record) as db:
        listed = {row[0] for row in db.execute("SELECT path FROM checked")}
    assert listed == {str(r.image_path.resolve()) for r in dataset.records}

    def refuse(data):
        raise AssertionError("an unchanged file that passed was checked again")

    monkeypatch.setattr(_io, "verify_jpeg", refuse)  # the next epoch's workers are forked with this
    assert sum(b["image"].shape[0] for b in DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)) \
        == len(dataset)
    later = RRSISD(rrsisd.root, "train", image_size=S, check_record=record)  # a later run
    later[0]
    copy_ = pickle.loads(pickle.dumps(later.checked_files))  # what a spawned worker receives
    assert isinstance(copy_, CheckedFiles) and copy_.path == record
    assert CheckedFiles.key(later.records[0].image_path) in copy_


def test_a_record_that_cannot_be_written_falls_back_to_memory(tmp_path):
    from uncertainty_rrsis.data import CheckedFiles

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the record's folder should be")
    checked = CheckedFiles(blocker / "checked_images.sqlite")
    path = tmp_path / "scene.jpg"
    path.write_bytes(jpeg_bytes(textured_image(32, 32, seed=5), quality=90))
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        read_image(path, checked=checked)
    assert CheckedFiles.key(path) in checked  # still remembered in this process
