"""RISBench reader (also the on-disk format of the synthetic benchmark)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DatasetLayoutError
from ._io import read_mask_file
from .base import Record, ReferringDataset, join_name, mask_values_hint, read_phrase_file, type_name
from .registry import register_dataset

__all__ = ["RISBench"]

_LAYOUT = """\
  <root>/
    img_rgb/<name>.png            RGB images (512x512 in RISBench)
    mask/<name>.png               masks, 0/255 (1- or 3-channel; channel 0 > 0 is foreground)
    output_phrase_train.txt       lines "<name>.png <sentence...>" (name includes .png)
    output_phrase_val.txt
    output_phrase_test.txt
    tags_<split>.jsonl            optional: {"name": "<name>.png", "tags": {...}} per line"""

_WARNED_VAL: set[str] = set()


@register_dataset("risbench")
class RISBench(ReferringDataset):
    """RISBench: PNG images and masks, one ``<name.png> <sentence>`` per line.

    The synthetic benchmark (:mod:`.synthetic`) is written in this layout plus a
    ``tags_<split>.jsonl`` sidecar; when the sidecar exists each sample's ``tags`` carry
    its entries (category, distractors, thin, tiny, ...).

    RISBench's official val list is drawn from the training image pool: reading
    ``split="val"`` warns once per root when the val images also appear in the train list.

    Layout::

      <root>/
        img_rgb/<name>.png            RGB images (512x512 in RISBench)
        mask/<name>.png               masks, 0/255 (1- or 3-channel; channel 0 > 0 is foreground)
        output_phrase_train.txt       lines "<name>.png <sentence...>" (name includes .png)
        output_phrase_val.txt
        output_phrase_test.txt
        tags_<split>.jsonl            optional: {"name": "<name>.png", "tags": {...}} per line

    Arguments: see :class:`~uncertainty_rrsis.data.ReferringDataset`.
    """

    name = "risbench"
    layout = _LAYOUT

    def build_records(self) -> list[Record]:
        phrase_file = self.root / f"output_phrase_{self.split}.txt"
        entries = read_phrase_file(phrase_file, layout=_LAYOUT)
        for folder in ("img_rgb", "mask"):
            if not (self.root / folder).is_dir():
                raise DatasetLayoutError(
                    f"folder not found: {self.root / folder}\nExpected layout:\n{_LAYOUT}"
                )
        tags = self._read_tags()
        records = []
        for number, name, sentence in entries:
            where = f"{phrase_file}:{number}"
            image_path, problem = join_name(self.root / "img_rgb", name, what="image name", where=where)
            mask_path, _ = join_name(self.root / "mask", name, what="mask name", where=where)
            records.append(
                Record(
                    id=Path(name).stem,
                    image_path=image_path,
                    sentences=(sentence,),
                    mask_source=mask_path,
                    where=where,
                    tags=tags.get(name, {}),
                    problem=problem,
                )
            )
        if self.split == "val" and records:
            self._warn_val_overlap([r.image_path.name for r in records])
        return records

    def _read_tags(self) -> dict[str, dict[str, Any]]:
        path = self.root / f"tags_{self.split}.jsonl"
        if not path.is_file():
            return {}
        out: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetLayoutError(
                        f"{path}:{number}: expected a JSON object {{'name': ..., 'tags': {{...}}}} ({exc})"
                    ) from exc
                name = item.get("name") if isinstance(item, dict) else None
                entry = item.get("tags") if isinstance(item, dict) else None
                if not isinstance(name, str) or not isinstance(entry, dict):
                    got = type_name(item) if not isinstance(item, dict) else (
                        f"name {type_name(name)}, tags {type_name(entry)}")
                    raise DatasetLayoutError(
                        f"{path}:{number}: expected a JSON object {{'name': '<name>.png', 'tags': {{...}}}} with a "
                        f"string name and an object of tags; got {got}. Fix or remove this line"
                    )
                out[name] = entry
        return out

    def _empty_split_detail(self) -> str:
        return (f"{self.root / f'output_phrase_{self.split}.txt'} lists no sample "
                "(expected lines '<name>.png <sentence...>')")

    def _empty_masks_hint(self, records: Sequence[Record]) -> str:
        return mask_values_hint(records, threshold=0, rule="RISBench masks are 0 / 255, foreground > 0",
                                 layout=_LAYOUT)

    def _warn_val_overlap(self, val_names: list[str]) -> None:
        key = str(self.root.resolve())
        if key in _WARNED_VAL:
            return
        train_file = self.root / "output_phrase_train.txt"
        if train_file.is_file():
            train_names = {name for _, name, _ in read_phrase_file(train_file, layout=_LAYOUT)}
            shared = sum(1 for n in set(val_names) if n in train_names)
            if not shared:
                return
            detail = f"{shared} of its {len(set(val_names))} val images are also in output_phrase_train.txt"
        else:
            detail = "the official val list is drawn from the training image pool"
        _WARNED_VAL.add(key)
        warnings.warn(
            f"RISBench val split under {self.root}: {detail}; val scores are optimistic, "
            "report test numbers and select checkpoints with care",
            UserWarning,
            stacklevel=4,
        )

    def read_mask(self, record: Record) -> np.ndarray:
        return read_mask_file(record.mask_source, threshold=0, layout=_LAYOUT, verify=self.verify_images,
                              checked=self.checked_files)

