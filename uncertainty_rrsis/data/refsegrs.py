"""RefSegRS reader."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._errors import DatasetLayoutError
from ._io import read_mask_file
from .base import Record, ReferringDataset, join_name, mask_values_hint, read_phrase_file
from .registry import register_dataset

__all__ = ["RefSegRS"]

_LAYOUT = """\
  <root>/
    images/<stem>.tif             RGB aerial tiles (512x512)
    masks/<stem>.tif              masks; foreground = value > 50 (channel 0)
    output_phrase_train.txt       lines "<stem> <sentence...>" (no extension)
    output_phrase_val.txt
    output_phrase_test.txt"""


@register_dataset("refsegrs")
class RefSegRS(ReferringDataset):
    """RefSegRS: ``.tif`` images and masks, one ``<stem> <sentence>`` per line.

    Foreground is ``mask > 50`` (channel 0 of a multi-channel mask).

    Layout::

      <root>/
        images/<stem>.tif             RGB aerial tiles (512x512)
        masks/<stem>.tif              masks; foreground = value > 50 (channel 0)
        output_phrase_train.txt       lines "<stem> <sentence...>" (no extension)
        output_phrase_val.txt
        output_phrase_test.txt

    Arguments: see :class:`~uncertainty_rrsis.data.ReferringDataset`.
    """

    name = "refsegrs"
    layout = _LAYOUT

    #: Threshold of the mask files: foreground = value > 50.
    mask_threshold: int = 50

    def build_records(self) -> list[Record]:
        phrase_file = self.root / f"output_phrase_{self.split}.txt"
        entries = read_phrase_file(phrase_file, layout=_LAYOUT)
        for folder in ("images", "masks"):
            if not (self.root / folder).is_dir():
                raise DatasetLayoutError(
                    f"folder not found: {self.root / folder}\nExpected layout:\n{_LAYOUT}"
                )
        records = []
        for number, stem, sentence in entries:
            where = f"{phrase_file}:{number}"
            image_path, problem = join_name(self.root / "images", f"{stem}.tif", what="image name", where=where)
            mask_path, _ = join_name(self.root / "masks", f"{stem}.tif", what="mask name", where=where)
            records.append(Record(stem, image_path, (sentence,), mask_path, where, problem=problem))
        return records

    def read_mask(self, record: Record) -> np.ndarray:
        return read_mask_file(record.mask_source, threshold=self.mask_threshold, layout=_LAYOUT,
                              verify=self.verify_images, checked=self.checked_files)

    def _empty_split_detail(self) -> str:
        return (f"{self.root / f'output_phrase_{self.split}.txt'} lists no sample "
                "(expected lines '<stem> <sentence...>')")

    def _empty_masks_hint(self, records: Sequence[Record]) -> str:
        return mask_values_hint(records, threshold=self.mask_threshold,
                                 rule=f"RefSegRS masks are 0 / 255 with foreground > {self.mask_threshold}",
                                 layout=_LAYOUT)
