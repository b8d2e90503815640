"""RRSIS-D reader: ``refs(unc).p`` + COCO-style ``instances.json`` + JPEG images."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Record, ReferringDataset
from ._errors import DatasetLayoutError, SampleError
from ._rle import segmentation_to_mask

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
        self._dangling: list[str] = []
        super().__init__(root, split, **kwargs)

    def _build_records(self) -> list[Record]:
        refs_path = self.root / "rrsisd" / self.refs_file
        inst_path = self.root / "rrsisd" / "instances.json"
        refs = _load_refs(refs_path)
        instances = _load_instances(inst_path)
        image_dir = self.root / self.image_dir
        if not image_dir.is_dir():
            raise DatasetLayoutError(
                f"RRSIS-D image folder not found: {image_dir}\nExpected layout:\n{_LAYOUT}"
            )
        anns = {a.get("id"): a for a in instances["annotations"]}
        images = {i.get("id"): i for i in instances["images"]}
        cats = {c.get("id"): c.get("name") for c in instances.get("categories", [])}
        records: list[Record] = []
        for k, ref in enumerate(refs):
            if ref.get("split") != self.split:
                continue
            ref_id = ref.get("ref_id", k)
            where = f"{refs_path} ref_id={ref_id}"
            ann = anns.get(ref.get("ann_id"))
            info = images.get(ref.get("image_id"))
            if ann is None:
                self._dangling.append(f"{where}: ann_id {ref.get('ann_id')!r} not in {inst_path}")
            if info is None:
                self._dangling.append(f"{where}: image_id {ref.get('image_id')!r} not in {inst_path}")
            file_name = (info or {}).get("file_name") or ref.get("file_name", "")
            cat_id = ref.get("category_id", (ann or {}).get("categories_id", (ann or {}).get("category_id")))
            tags = {"category": cats[cat_id]} if cat_id in cats else {}
            sents = [
                (s.get("sent_id", i), str(s.get("raw", s.get("sent", ""))))
                for i, s in enumerate(ref.get("sentences", []))
            ]
            source = (ann, info, inst_path)
            if self.all_sentences:
                for sent_id, text in sents or [(None, "")]:
                    records.append(
                        Record(f"{ref_id}_{sent_id}", image_dir / file_name, (text,), source, where, tags)
                    )
            else:
                records.append(
                    Record(
                        str(ref_id), image_dir / file_name, tuple(t for _, t in sents), source, where, tags
                    )
                )
        return records

    def annotation_problems(self) -> list[str]:
        return self._dangling + super().annotation_problems()

    def _mask_description(self, record: Record) -> str:
        ann, _, inst_path = record.mask_source
        return f"of annotation {None if ann is None else ann.get('id')!r} in {inst_path}"

    def _read_mask(self, record: Record) -> np.ndarray:
        ann, info, inst_path = record.mask_source
        if ann is None or info is None:
            raise SampleError(f"{record.where}: its annotation or image entry is missing from {inst_path}")
        try:
            return segmentation_to_mask(ann.get("segmentation"), int(info["height"]), int(info["width"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SampleError(
                f"bad segmentation of annotation {ann.get('id')!r} in {inst_path} ({record.where}): {exc}"
            ) from exc
