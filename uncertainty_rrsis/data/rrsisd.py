"""RRSIS-D reader: ``refs(unc).p`` + COCO-style ``instances.json`` + JPEG images."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ._errors import DatasetLayoutError, SampleError
from ._rle import MAX_MASK_PIXELS, segmentation_problem, segmentation_to_mask
from .base import Record, ReferringDataset, join_name, type_name
from .registry import register_dataset

__all__ = ["RRSISD"]

_LAYOUT = """\
  <root>/
    rrsisd/refs(unc).p            pickle: list of refs {ref_id, ann_id, image_id, split,
                                  sentences: [{raw, sent, tokens, sent_id}], file_name, ...}
    rrsisd/instances.json         COCO style: images [{id, file_name, height, width}],
                                  annotations [{id, image_id, segmentation (RLE dicts with
                                  string counts, or polygons), categories_id, bbox}], categories
    images/rrsisd/JPEGImages/<file_name>   800x800 JPEG images"""


class _PlainUnpickler(pickle.Unpickler):
    """Loads only plain containers and scalars: a refs file never needs a class."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refs file refers to {module}.{name}; only lists, dicts, strings and numbers are accepted"
        )


def _load_refs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetLayoutError(f"RRSIS-D refs file not found: {path}\nExpected layout:\n{_LAYOUT}")
    try:
        with path.open("rb") as fh:
            refs = _PlainUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetLayoutError(f"cannot read RRSIS-D refs pickle {path}: {exc}") from exc
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DatasetLayoutError(f"{path} must hold a list of ref dicts; got {type(refs).__name__}")
    return refs


def _load_instances(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetLayoutError(f"RRSIS-D instances file not found: {path}\nExpected layout:\n{_LAYOUT}")
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"cannot read RRSIS-D instances file {path}: {exc}") from exc
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise DatasetLayoutError(f"{path} must be a COCO-style dict with 'images' and 'annotations'")
    return data


@register_dataset("rrsisd")
class RRSISD(ReferringDataset):
    """RRSIS-D (RMSIN): refs pickle + COCO annotations + JPEG images.

    At evaluation (``split`` val/test by default) every sentence of a ref is its own
    sample, id ``"<ref_id>_<sent_id>"``; at training time a ref is one sample, id
    ``"<ref_id>"``, whose sentence is drawn at random (torch RNG) on each access.
    The sentence is the ``raw`` field (the LAVT/RMSIN choice), ``sent`` when ``raw`` is
    absent. Masks are the union of the annotation's parts (RLE with string counts or
    polygons); ``tags`` hold ``{"category": <name>}``.

    Layout::

      <root>/
        rrsisd/refs(unc).p            pickle: list of refs {ref_id, ann_id, image_id, split,
                                      sentences: [{raw, sent, tokens, sent_id}], file_name, ...}
        rrsisd/instances.json         COCO style: images [{id, file_name, height, width}],
                                      annotations [{id, image_id, segmentation, categories_id, bbox}]
        images/rrsisd/JPEGImages/<file_name>   800x800 JPEG images

    Args (beyond :class:`~uncertainty_rrsis.data.ReferringDataset`):
        refs_file: name of the refs pickle inside ``<root>/rrsisd/``.
        image_dir: image folder relative to ``root``.
        all_sentences: one sample per sentence (default: True except for ``train``).

    The refs file is unpickled with a loader that accepts only plain containers, so a
    tampered file cannot run code.
    """

    name = "rrsisd"
    layout = _LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        refs_file: str = "refs(unc).p",
        image_dir: str | Path = "images/rrsisd/JPEGImages",
        all_sentences: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.refs_file = refs_file
        self.image_dir = Path(image_dir)
        self.all_sentences = (split != "train") if all_sentences is None else bool(all_sentences)
        self._splits_seen: list[str] = []
        super().__init__(root, split, **kwargs)

    def build_records(self) -> list[Record]:
        refs_path = self.root / "rrsisd" / self.refs_file
        inst_path = self.root / "rrsisd" / "instances.json"
        refs = _load_refs(refs_path)
        instances = _load_instances(inst_path)
        image_dir = self.root / self.image_dir
        if not image_dir.is_dir():
            raise DatasetLayoutError(
                f"RRSIS-D image folder not found: {image_dir}\nExpected layout:\n{_LAYOUT}"
            )
        anns = _index(instances, "annotations", inst_path)
        images = _index(instances, "images", inst_path)
        cats = {
            c.get("id"): c.get("name")
            for c in instances.get("categories", []) or []
            if isinstance(c, dict) and _is_id(c.get("id"))
        }
        self._splits_seen = sorted({str(r.get("split")) for r in refs})
        records: list[Record] = []
        for k, ref in enumerate(refs):
            if ref.get("split") != self.split:
                continue
            problems: list[str] = []
            ref_id = ref.get("ref_id", k)
            if _is_id(ref_id):
                where = f"{refs_path} ref_id={ref_id}"
            else:
                where = f"{refs_path} ref #{k} (in file order)"
                problems.append(f"{where}: ref_id must be an integer or a string; got {type_name(ref_id)}")
                ref_id = f"ref{k}"
            ann = info = None
            for key, table, name in (("ann_id", anns, "annotations"), ("image_id", images, "images")):
                value = ref.get(key)
                if not _is_id(value):
                    problems.append(f"{where}: {key} must be an integer or a string; got {type_name(value)}")
                elif value not in table:
                    problems.append(f"{where}: {key} {value!r} not in {inst_path} ({name})")
                elif key == "ann_id":
                    ann = table[value]
                else:
                    info = table[value]
            if info is not None:
                problems += _image_entry_problems(info, inst_path)
            if ann is not None:
                problem = segmentation_problem(ann.get("segmentation"))
                if problem:
                    problems.append(f"{inst_path} annotation id={ann.get('id')!r} ({where}): segmentation {problem}")
            file_name = (info or {}).get("file_name") or ref.get("file_name", "")
            image_path, problem = join_name(image_dir, file_name, what="file_name", where=where)
            if problem:
                problems.append(problem)
            cat_id = ref.get("category_id", (ann or {}).get("categories_id", (ann or {}).get("category_id")))
            if cat_id is not None and not _is_id(cat_id):
                problems.append(f"{where}: category_id must be an integer or a string; got {type_name(cat_id)}")
            tags = {"category": cats[cat_id]} if _is_id(cat_id) and cat_id in cats else {}
            sents, sentence_problems = _sentences(ref.get("sentences", []), where)
            problems += sentence_problems
            source = (ann, info, inst_path)
            problem_text = "\n  ".join(problems) or None
            if self.all_sentences:
                for sent_id, text in sents or [(None, "")]:
                    records.append(
                        Record(f"{ref_id}_{sent_id}", image_path, (text,), source, where, tags, problem_text)
                    )
            else:
                records.append(
                    Record(str(ref_id), image_path, tuple(t for _, t in sents), source, where, tags, problem_text)
                )
        return records

    def _empty_split_detail(self) -> str:
        return (f"{self.root / 'rrsisd' / self.refs_file} has no ref with split == {self.split!r} "
                f"(splits found: {', '.join(self._splits_seen) or 'none'})")

    def _empty_masks_hint(self, records: Sequence[Record]) -> str:
        return ("the masks are decoded from the 'segmentation' fields of instances.json; check that they "
                "encode the objects (RLE counts or polygons of the right image)")

    def _mask_description(self, record: Record) -> str:
        ann, _, inst_path = record.mask_source
        return f"of annotation {None if ann is None else ann.get('id')!r} in {inst_path}"

    def read_mask(self, record: Record) -> np.ndarray:
        ann, info, inst_path = record.mask_source
        if record.problem:
            raise SampleError(record.problem)
        if ann is None or info is None:
            raise SampleError(f"{record.where}: its annotation or image entry is missing from {inst_path}")
        height, width = info["height"], info["width"]
        try:  # the declared size against the image file (its header only) before any mask is built
            with Image.open(record.image_path) as img:
                actual = img.size
        except (OSError, ValueError):
            actual = None  # reading the image itself reports it
        if actual is not None and actual != (width, height):
            raise SampleError(
                f"{inst_path} image id={info.get('id')!r} declares {height}x{width} (HxW) but {record.image_path} "
                f"is {actual[1]}x{actual[0]} ({record.where}); fix height/width in instances.json (the masks "
                "are encoded at the declared size)"
            )
        try:
            return segmentation_to_mask(ann.get("segmentation"), height, width)
        except (ValueError, KeyError, TypeError) as exc:
            raise SampleError(
                f"bad segmentation of annotation {ann.get('id')!r} in {inst_path} ({record.where}): {exc}; "
                "fix or re-export this annotation (pycocotools.mask.encode of the object's mask gives valid "
                "RLE counts)"
            ) from exc


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _index(instances: dict[str, Any], key: str, path: Path) -> dict[Any, dict[str, Any]]:
    """``{entry["id"]: entry}`` of one list of instances.json, refusing entries of the wrong type."""
    entries = instances[key]
    if not isinstance(entries, list):
        raise DatasetLayoutError(f"{path}: {key!r} must be a list; got {type_name(entries)}")
    out = {}
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetLayoutError(f"{path}: {key}[{j}] must be an object; got {type_name(entry)}. Fix this entry")
        if not _is_id(entry.get("id")):
            raise DatasetLayoutError(
                f"{path}: {key}[{j}] has id {type_name(entry.get('id'))}; ids must be integers or strings. "
                "Fix this entry"
            )
        out[entry["id"]] = entry
    return out


def _image_entry_problems(info: dict[str, Any], path: Path) -> list[str]:
    out = []
    for key in ("height", "width"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            out.append(f"{path} image id={info.get('id')!r}: {key} must be a positive integer; got {type_name(value)}")
    if out:
        return out
    height, width = info["height"], info["width"]  # positive integers, checked above
    if height * width > MAX_MASK_PIXELS:
        out.append(
            f"{path} image id={info.get('id')!r}: declares {height}x{width} pixels, more than the "
            f"{MAX_MASK_PIXELS} a mask may have; fix height/width"
        )
    return out


def _sentences(sentences: Any, where: str) -> tuple[list[tuple[Any, str]], list[str]]:
    """(sent_id, text) of a ref's sentences (``raw``, else ``sent``), and what is wrong with them."""
    if not isinstance(sentences, list):
        return [], [f"{where}: 'sentences' must be a list; got {type_name(sentences)}"]
    out, problems = [], []
    for i, s in enumerate(sentences):
        if not isinstance(s, dict):
            problems.append(f"{where}: sentence {i} must be an object {{raw, sent, sent_id}}; got {type_name(s)}")
            out.append((i, ""))
            continue
        sent_id = s.get("sent_id", i)
        if not _is_id(sent_id):
            problems.append(f"{where}: sentence {i}: sent_id must be an integer or a string; got {type_name(sent_id)}")
            sent_id = i
        key = "raw" if "raw" in s else "sent"
        text = s.get(key, "")
        if not isinstance(text, str):
            problems.append(
                f"{where}: sentence {i} (sent_id={sent_id!r}): {key!r} must be a string; got {type_name(text)}"
            )
            text = ""
        out.append((sent_id, text))
    return out, problems
