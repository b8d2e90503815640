"""Dataset folders for the reader tests, in each benchmark's exact on-disk format.

Two sources of content feed the same writers:

* **generated here** (sentences, masks, pictures, the RRSIS-D refs and COCO annotations): the
  reader tests run on these in any clone of the repository;
* **the genuine sample annotations** in ``../shared/data/real-samples/`` next to the repository
  (sentences, COCO RLE masks and an RRSIS-D refs pickle, described in its ``SOURCES.md``): read
  where they lie by ``tests/data/test_real_samples.py``, which is skipped without them. They
  are never copied into the repository; the tests write them into temporary folders only.

The layouts (``docs/datasets.md``)::

  RISBench  img_rgb/<name>.png            RGB pictures
            mask/<name>.png               3-channel masks, 0 / 255
            output_phrase_<split>.txt     "<name>.png <sentence...>" per line
  RefSegRS  images/<stem>.tif             RGB pictures
            masks/<stem>.tif              one channel, foreground = value > 50
            output_phrase_<split>.txt     "<stem> <sentence...>" per line
  RRSIS-D   rrsisd/refs(unc).p            pickle (protocol 4): list of ref dicts
            rrsisd/instances.json         COCO style; RLE dicts with string counts or polygons,
                                          the category under ``categories_id``
            images/rrsisd/JPEGImages/<file_name>

Generated RLE strings come from pycocotools, so that the reader's own decoder is checked against
an independent encoder.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

__all__ = [
    "REAL_SAMPLES", "requires_real_samples", "PhraseSample", "RRSISDFolder",
    "fake_image", "coco_rle", "coco_decode", "rasterise_polygons", "refsegrs_mask_values",
    "make_tokenizer", "risbench_samples", "refsegrs_samples",
    "write_risbench", "write_refsegrs", "write_rrsisd",
    "build_risbench", "build_refsegrs", "build_rrsisd",
    "load_real_jsonl", "load_real_refs", "real_phrase_samples", "build_real_rrsisd",
    "textured_image", "jpeg_bytes", "damage_jpeg", "truncate_file", "png16_bytes", "write_float_tiff",
    "write_rrsisd_annotations",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the genuine sample annotations lie: ``../shared/data/real-samples/`` beside the repository.
REAL_SAMPLES = REPO_ROOT.parent / "shared" / "data" / "real-samples"

#: Marks a test (or module) that reads the genuine sample annotations; skipped without them.
requires_real_samples = pytest.mark.skipif(
    not (REAL_SAMPLES / "SOURCES.md").is_file(),
    reason=(
        "the genuine sample annotations are not here: they belong in shared/data/real-samples/ "
        f"in the folder that holds the repository (looked in {REAL_SAMPLES})"
    ),
)


# --------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhraseSample:
    """One line of an ``output_phrase_<split>.txt`` file and the mask its reader must return.

    ``name`` is the line's first token: ``"<name>.png"`` for RISBench, ``"<stem>"`` for RefSegRS.
    ``mask`` is (H, W) bool.
    """

    name: str
    sentence: str
    mask: np.ndarray


def fake_image(height: int, width: int, *, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 smooth picture (cheap, deterministic, compresses well)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, 3)
    img = base[None, None, :] + 0.1 * (xx[..., None] + yy[..., None]) % 50
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_image(height: int, width: int, *, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 picture with texture and noise, so that its JPEG has substantial compressed data."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(xx / 17.0) * np.cos(yy / 23.0), 128 + 70 * np.sin((xx + yy) / 41.0),
                    128 + 50 * np.cos(xx / 7.0)], axis=2)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def jpeg_bytes(picture: np.ndarray, **options: Any) -> bytes:
    """The JPEG file Pillow writes for ``picture`` (``options`` go to ``Image.save``)."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def damage_jpeg(data: bytes, *, seed: int, length: int = 64) -> bytes:
    """``data`` with ``length`` random bytes written over the middle of its compressed (scan) data.

    The random bytes never contain 0xFF, so the file's marker structure stays intact: Pillow
    decodes the result without an error, with wrong pixels from the damaged place on.
    """
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    end = len(data) - 2  # the end-of-image marker
    middle = (start + end) // 2 - length // 2
    noise = np.random.default_rng(seed).integers(0, 255, length, dtype=np.uint8).tobytes()  # never 0xFF
    return data[:middle] + noise + data[middle + length :]


def truncate_file(path: Path, fraction: float = 0.6) -> None:
    """Cut ``path`` to ``fraction`` of its bytes, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def png16_bytes(values: np.ndarray) -> bytes:
    """A 16-bit PNG of ``values`` ((H, W) grey or (H, W, 3) RGB, uint16), written by hand (Pillow
    does not write 16-bit colour)."""
    values = np.asarray(values, dtype=np.uint16)
    height, width = values.shape[:2]
    colour_type = 2 if values.ndim == 3 else 0
    rows = values.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_float_tiff(path: Path, values: np.ndarray) -> None:
    """A one-channel 32-bit float TIFF (Pillow mode ``F``) of the (H, W) ``values``."""
    Image.fromarray(np.asarray(values, dtype=np.float32)).save(path, format="TIFF")


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """pycocotools' compressed RLE of a (H, W) mask, ``counts`` as a string (the RRSIS-D form)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_decode(rle: dict[str, Any]) -> np.ndarray:
    """pycocotools' decoding of a compressed RLE dict with string counts, as (H, W) bool."""
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def rasterise_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The union of COCO polygons rasterised and decoded by pycocotools, (H, W) bool."""
    parts = coco_mask.decode(coco_mask.frPyObjects(polygons, height, width))  # (H, W, n)
    return parts.any(axis=2)


def _ellipse(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Filled ellipse; centre and radii in fractions of the picture's height / width."""
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy + 0.5 - cy * height) / (ry * height)) ** 2 + ((xx + 0.5 - cx * width) / (rx * width)) ** 2 <= 1


def _rect(height: int, width: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Filled rectangle; corners in fractions of the picture's height / width (end exclusive)."""
    out = np.zeros((height, width), bool)
    out[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = True
    return out


def _band(height: int, width: int, thickness: int) -> np.ndarray:
    """A diagonal band ``thickness`` pixels wide from the top-left to the bottom-right corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.abs(yy * width - xx * height) <= thickness * max(height, width) / 2


def make_tokenizer(folder: Path, sentences: list[str]) -> Any:
    """A tiny ``BertTokenizerFast`` whose vocab holds every word of ``sentences``."""
    from .tiny import bert_tokenizer

    words: set[str] = set()
    for sentence in sentences:
        for sign in ",.'":
            sentence = sentence.replace(sign, " ")
        words.update(sentence.lower().split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "'", "-", *sorted(words - {"-"})]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return bert_tokenizer(path)


# --------------------------------------------------------------------------------------------
# generated RISBench and RefSegRS content
# --------------------------------------------------------------------------------------------

#: RISBench-style lines: (png name, sentence, mask drawer). Line 0 is long (cut at 20 tokens),
#: line 9 keeps a double space and a space before its full stop, as RISBench's sentences do.
_RISBENCH_LINES = [
    ("test_0_0.png",
     "The large baseball field in the middle of the image has a sandy infield diamond with a small "
     "pitcher's mound and a wide green outfield that curves around it.",
     lambda h, w: _ellipse(h, w, 0.5, 0.5, 0.3, 0.35)),
    ("test_1_0.png", "The ship that is closest to the top edge of the image.",
     lambda h, w: _rect(h, w, 0.03, 0.40, 0.09, 0.55)),
    ("test_1_1.png", "The ship located towards the bottom left of the image.",
     lambda h, w: _rect(h, w, 0.80, 0.08, 0.86, 0.26)),
    ("test_2_0.png", "The airplane parked near the center of the image.",
     lambda h, w: _rect(h, w, 0.40, 0.47, 0.60, 0.53) | _rect(h, w, 0.47, 0.38, 0.51, 0.62)),
    ("test_3_2.png", "The vehicle is located on the bottom-right side of the image.",
     lambda h, w: _rect(h, w, 0.85, 0.80, 0.89, 0.86)),
    ("test_4_1.png", "The storage tank at the top left corner.",
     lambda h, w: _ellipse(h, w, 0.02, 0.03, 0.10, 0.10)),  # cut by the border
    ("test_5_0.png", "The small, rectangular swimming pool.",
     lambda h, w: _rect(h, w, 0.30, 0.60, 0.36, 0.70)),
    ("test_5_3.png", "The narrow road running across the image from left to right.",
     lambda h, w: _rect(h, w, 0.70, 0.0, 0.70 + 3 / h, 1.0)),  # 3 px thin
    ("test_6_0.png", "The tiny vehicle in the middle of the image.",
     lambda h, w: _rect(h, w, 0.5, 0.5, 0.5 + 3 / h, 0.5 + 3 / w)),  # 3 x 3 px
    ("test_7_4.png", "The  small vehicle positioned at the top center of the image .",
     lambda h, w: _rect(h, w, 0.05, 0.48, 0.08, 0.52)),
    ("test_8_0.png", "The ship in the top left of the image.",
     lambda h, w: _rect(h, w, 0.10, 0.12, 0.14, 0.30)),
    ("test_8_1.png", "The ship in the middle right of the image.",
     lambda h, w: _rect(h, w, 0.46, 0.70, 0.50, 0.88)),
    ("test_9_2.png", "The bridge that crosses the river diagonally.",
     lambda h, w: _band(h, w, 4)),
    ("test_10_0.png", "The tennis court on the left.",
     lambda h, w: _rect(h, w, 0.35, 0.05, 0.60, 0.20)),
    ("test_10_6.png", "A white vehicle is located at the very top right edge of the image.",
     lambda h, w: _rect(h, w, 0.0, 0.95, 0.03, 1.0)),  # touches two borders
]

#: RefSegRS-style lines: (tif stem, sentence, mask drawer); short phrases, one a single word.
_REFSEGRS_LINES = [
    ("1042", "car parked beside the building", lambda h, w: _rect(h, w, 0.20, 0.30, 0.24, 0.38)),
    ("1187", "vehicle", lambda h, w: _rect(h, w, 0.60, 0.10, 0.63, 0.16) | _rect(h, w, 0.70, 0.50, 0.73, 0.56)),
    ("2210", "road along the trees", lambda h, w: _band(h, w, 12)),
    ("2379", "low vegetation next to the building", lambda h, w: _ellipse(h, w, 0.65, 0.35, 0.20, 0.25)),
    ("3051", "van", lambda h, w: _rect(h, w, 0.45, 0.45, 0.48, 0.53)),
    ("3326", "truck in the parking area", lambda h, w: _rect(h, w, 0.80, 0.75, 0.85, 0.90)),
    ("4108", "building with a flat roof", lambda h, w: _rect(h, w, 0.10, 0.55, 0.40, 0.90)),
]


def risbench_samples(*, size: int = 512) -> list[PhraseSample]:
    """The 15 generated RISBench lines with their masks at ``size`` x ``size`` (512 in RISBench)."""
    return [PhraseSample(name, sentence, draw(size, size)) for name, sentence, draw in _RISBENCH_LINES]


def refsegrs_samples(*, size: int = 512) -> list[PhraseSample]:
    """The 7 generated RefSegRS lines with their masks at ``size`` x ``size`` (512 in RefSegRS)."""
    return [PhraseSample(stem, sentence, draw(size, size)) for stem, sentence, draw in _REFSEGRS_LINES]


def refsegrs_mask_values(mask: np.ndarray) -> np.ndarray:
    """The uint8 mask file of a RefSegRS target: 255 inside, 0 outside, and values around the
    > 50 cut (51 on the object's top row; 50 and 40 in background patches) so that a reader
    with another threshold gets a different mask."""
    values = np.where(mask, 255, 0).astype(np.uint8)
    rows = np.flatnonzero(mask.any(axis=1))
    values[rows[0]][mask[rows[0]]] = 51
    patch = np.zeros_like(mask)
    patch[:8, :8] = True
    values[patch & ~mask] = 40
    patch[:] = False
    patch[-8:, -8:] = True
    values[patch & ~mask] = 50
    return values


def _write_phrases(path: Path, samples: list[PhraseSample]) -> None:
    path.write_text("".join(f"{s.name} {s.sentence}\n" for s in samples), encoding="utf-8")


def write_risbench(root: Path, samples: list[PhraseSample], *, split: str = "test", seed: int = 0) -> None:
    """RISBench layout: PNG pictures, 3-channel 0/255 PNG masks, ``output_phrase_<split>.txt``."""
    (root / "img_rgb").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(exist_ok=True)
    for k, s in enumerate(samples):
        h, w = s.mask.shape
        Image.fromarray(fake_image(h, w, seed=seed + k)).save(root / "img_rgb" / s.name)
        m = s.mask.astype(np.uint8) * 255
        Image.fromarray(np.stack([m, m, m], axis=2)).save(root / "mask" / s.name)
    _write_phrases(root / f"output_phrase_{split}.txt", samples)


def write_refsegrs(root: Path, samples: list[PhraseSample], *, split: str = "test", seed: int = 100) -> None:
    """RefSegRS layout: ``.tif`` pictures and one-channel ``.tif`` masks (:func:`refsegrs_mask_values`)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for k, s in enumerate(samples):
        h, w = s.mask.shape
        Image.fromarray(fake_image(h, w, seed=seed + k)).save(root / "images" / f"{s.name}.tif")
        Image.fromarray(refsegrs_mask_values(s.mask)).save(root / "masks" / f"{s.name}.tif")
    _write_phrases(root / f"output_phrase_{split}.txt", samples)


def build_risbench(root: Path, *, size: int = 512) -> list[PhraseSample]:
    """Write the generated RISBench test split into ``root``; returns its samples."""
    samples = risbench_samples(size=size)
    write_risbench(root, samples)
    return samples


def build_refsegrs(root: Path, *, size: int = 512) -> list[PhraseSample]:
    """Write the generated RefSegRS test split into ``root``; returns its samples."""
    samples = refsegrs_samples(size=size)
    write_refsegrs(root, samples)
    return samples


# --------------------------------------------------------------------------------------------
# RRSIS-D
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RRSISDFolder:
    """An RRSIS-D folder and what it holds.

    Attributes:
        root: the dataset root (``rrsisd/`` and ``images/`` inside).
        refs: the refs pickle's list.
        instances: the ``instances.json`` dict.
        masks: ann_id -> the (H, W) bool mask the reader must return.
        encodings: ann_id -> how its segmentation is stored: ``"rle"``, ``"rle-parts"`` (two RLE
            dicts), ``"polygon"`` or ``"polygons"`` (two polygons).
    """

    root: Path
    refs: list[dict[str, Any]]
    instances: dict[str, Any]
    masks: dict[int, np.ndarray]
    encodings: dict[int, str]


#: DIOR's categories (RRSIS-D's images come from DIOR-RSVG), ids from 1.
DIOR_CATEGORIES = (
    "airplane airport baseballfield basketballcourt bridge chimney dam Expressway-Service-area "
    "Expressway-toll-station golffield groundtrackfield harbor overpass ship stadium storagetank "
    "tenniscourt trainstation vehicle windmill"
).split()

#: Generated refs: (split, sentences (raw), image height, width, encoding).
_RRSISD_REFS = [
    ("test", ["The gray windmill on the left"], 800, 800, "rle"),
    ("test", ["A ship near the harbor", "The white ship at the bottom"], 800, 800, "rle"),
    ("test", ["The vehicle in the middle"], 48, 64, "polygon"),
    ("test", ["Two storage tanks on the right"], 40, 48, "rle-parts"),
    ("test", ["The bridge over the river"], 56, 48, "polygons"),
    ("test", ["The tennis court at the top"], 48, 64, "rle"),
    ("test", ["A small chimney"], 40, 40, "polygon"),
    ("test", ["The airplane on the runway", "The large airplane", "An airplane in the lower half"], 64, 56, "rle"),
    ("val", ["The dam in the upper part"], 48, 48, "rle"),
    ("val", ["A stadium", "The round stadium"], 40, 56, "polygon"),
    ("train", ["The expressway toll station in the middle", "A toll station", "The toll station"], 56, 64, "rle"),
    ("train", ["The golf field on the left", "A green golf field"], 48, 40, "polygon"),
    ("train", ["The harbor"], 40, 48, "rle"),
]


def _blob(height: int, width: int, k: int) -> np.ndarray:
    """A deterministic object mask for ref ``k``: an ellipse or a rectangle, never empty."""
    if k % 2:
        return _rect(height, width, 0.15 + 0.02 * (k % 4), 0.1, 0.7, 0.75 - 0.03 * (k % 5))
    return _ellipse(height, width, 0.45 + 0.02 * (k % 3), 0.5, 0.25, 0.3)


def _polygon(height: int, width: int, k: int, *, shift: float = 0.0) -> list[float]:
    """A quadrilateral ``[x1, y1, ..., x4, y4]`` inside the picture."""
    x0, y0 = (0.1 + shift) * width + k % 3, 0.15 * height + k % 4
    x1, y1 = (0.45 + shift) * width, 0.8 * height
    return [float(v) for v in (x0, y0, x1, y0 + 1, x1 - 2, y1, x0 + 1, y1 - 1)]


def _segmentation(kind: str, height: int, width: int, k: int) -> tuple[list[Any], np.ndarray]:
    """(the COCO ``segmentation`` field, the mask it encodes) for one generated annotation."""
    if kind == "rle":
        mask = _blob(height, width, k)
        return [coco_rle(mask)], mask
    if kind == "rle-parts":
        left = _rect(height, width, 0.2, 0.05, 0.5, 0.4)
        right = _ellipse(height, width, 0.6, 0.7, 0.2, 0.2)
        return [coco_rle(left), coco_rle(right)], left | right
    if kind == "polygon":
        polygons = [_polygon(height, width, k)]
    else:  # "polygons": two parts
        polygons = [_polygon(height, width, k), _polygon(height, width, k, shift=0.5)]
    return polygons, rasterise_polygons(polygons, height, width)


def _lower_words(raw: str) -> str:
    """RRSIS-D's ``sent``: the ``raw`` sentence in lower case without punctuation."""
    return " ".join(raw.lower().replace(",", " ").replace(".", " ").split())


def write_rrsisd_annotations(
    root: Path, refs: list[Any], instances: dict[str, Any], *, refs_file: str = "refs(unc).p"
) -> None:
    """Only the annotation files of an RRSIS-D folder: the refs pickle (protocol 4) and ``instances.json``."""
    data_dir = root / "rrsisd"
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / refs_file).open("wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    (data_dir / "instances.json").write_text(json.dumps(instances), encoding="utf-8")


def write_rrsisd(root: Path, refs: list[dict[str, Any]], instances: dict[str, Any], *, seed: int = 200) -> None:
    """RRSIS-D layout: the refs pickle (protocol 4), ``instances.json`` and one JPEG per image."""
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    write_rrsisd_annotations(root, refs, instances)
    for k, info in enumerate(instances["images"]):
        picture = fake_image(info["height"], info["width"], seed=seed + k)
        Image.fromarray(picture).save(image_dir / info["file_name"], quality=90)


def build_rrsisd(root: Path) -> RRSISDFolder:
    """Write the generated RRSIS-D folder (13 refs over the three splits) into ``root``.

    Every ref has its own image and annotation. Test ref 5 carries no ``category_id`` (the
    reader takes the annotation's ``categories_id``) and test ref 6's sentence has no ``raw``
    field (the reader takes ``sent``).
    """
    refs, images, anns, masks, encodings = [], [], [], {}, {}
    sent_id = 700
    for k, (split, raws, height, width, kind) in enumerate(_RRSISD_REFS):
        ann_id, image_id, ref_id = 9000 + k, 3000 + k, 100 + k
        category_id = 1 + (3 * k) % len(DIOR_CATEGORIES)
        file_name = f"{image_id:05d}.jpg"
        sentences = []
        for raw in raws:
            sent = _lower_words(raw)
            sentences.append({"tokens": sent.split(), "raw": raw, "sent_id": sent_id, "sent": sent})
            sent_id += 1
        ref = {"image_id": image_id, "split": split, "sentences": sentences, "file_name": file_name,
               "category_id": category_id, "ann_id": ann_id, "sent_ids": [s["sent_id"] for s in sentences],
               "ref_id": ref_id}
        if split == "test" and k == 5:
            del ref["category_id"]
        if split == "test" and k == 6:
            del sentences[0]["raw"]
        refs.append(ref)
        segmentation, masks[ann_id] = _segmentation(kind, height, width, k)
        encodings[ann_id] = kind
        ys, xs = np.nonzero(masks[ann_id])
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        anns.append({"id": ann_id, "image_id": image_id, "segmentation": segmentation,
                     "categories_id": category_id, "bbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
                     "area": int(masks[ann_id].sum()), "iscrowd": 0})
    instances = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(DIOR_CATEGORIES)],
    }
    write_rrsisd(root, refs, instances)
    return RRSISDFolder(root, refs, instances, masks, encodings)


# --------------------------------------------------------------------------------------------
# the genuine sample annotations (read in place; never copied into the repository)
# --------------------------------------------------------------------------------------------


def load_real_jsonl(group: str) -> list[dict[str, Any]]:
    """Lines of ``<group>/datainfo/<group>_test.jsonl`` (group: risbench, refsegrs, rrsisd)."""
    path = REAL_SAMPLES / group / "datainfo" / f"{group}_test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_real_refs() -> list[dict[str, Any]]:
    """The genuine RRSIS-D refs pickle (40 test refs)."""
    with (REAL_SAMPLES / "rrsisd" / "rrsisd" / "refs(unc).p").open("rb") as fh:
        return pickle.load(fh)


def real_phrase_samples(group: str) -> list[PhraseSample]:
    """The genuine RISBench or RefSegRS lines as :class:`PhraseSample` (masks decoded by pycocotools).

    The line's first token is the jsonl's ``image_id``: the png name for RISBench, the tif
    stem for RefSegRS.
    """
    return [
        PhraseSample(str(item["image_id"]), item["sent"], coco_decode(item["segmentation"]))
        for item in load_real_jsonl(group)
    ]


def build_real_rrsisd(root: Path) -> RRSISDFolder:
    """RRSIS-D folder around the genuine refs pickle (40 test refs) and an ``instances.json``.

    The 3 refs with a genuine mask in ``rrsisd_test.jsonl`` get it (800 x 800, list of RLE dicts
    with string counts); the other 37 get generated masks on small pictures, alternately as RLE
    and as polygons.
    """
    refs = load_real_refs()
    real = {item["ann_id"]: item for item in load_real_jsonl("rrsisd")}
    images, anns, masks, encodings = [], [], {}, {}
    categories: dict[int, str] = {}
    for k, ref in enumerate(refs):
        if ref["ann_id"] in real:
            item = real[ref["ann_id"]]
            height, width = item["segmentation"][0]["size"]
            segmentation: list[Any] = item["segmentation"]
            masks[ref["ann_id"]], kind = coco_decode(item["segmentation"][0]), "rle"
            categories[item["category_id"]] = item["category_name"]
        else:
            height, width, kind = 40 + (k % 3) * 8, 48 + (k % 2) * 16, ("rle", "polygon")[k % 2]
            segmentation, masks[ref["ann_id"]] = _segmentation(kind, height, width, k)
        encodings[ref["ann_id"]] = kind
        categories.setdefault(ref["category_id"], f"category-{ref['category_id']}")
        images.append({"id": ref["image_id"], "file_name": ref["file_name"], "height": height, "width": width})
        anns.append({"id": ref["ann_id"], "image_id": ref["image_id"], "segmentation": segmentation,
                     "categories_id": ref["category_id"], "bbox": [0, 0, width - 1, height - 1], "iscrowd": 0})
    instances = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in sorted(categories.items())],
    }
    write_rrsisd(root, refs, instances)
    return RRSISDFolder(root, refs, instances, masks, encodings)
