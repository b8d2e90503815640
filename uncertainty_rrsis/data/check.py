"""Walk a whole dataset and report every bad sample at once.

Library use::

    from uncertainty_rrsis.data import RISBench, check_dataset
    report = check_dataset(RISBench(root, "test", strict=False))
    print(report)            # every problem, one per line
    assert report.ok

Command line (exit status 1 when a problem is found)::

    python -m uncertainty_rrsis.data.check --dataset risbench --root PATH [--split test]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._checked import CHECK_RECORD_NAME
from ._errors import DatasetError
from .base import SPLITS, ReferringDataset
from .registry import get_dataset_class, list_datasets

__all__ = ["CheckReport", "SampleProblem", "check_dataset", "main"]


@dataclass(frozen=True)
class SampleProblem:
    """One bad sample: its index, id and the error message (which names the file)."""

    index: int
    id: str
    message: str


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    ``problems`` are the bad samples; ``errors`` what is wrong with the split as a whole
    (no sample at all, every target mask empty); ``warnings`` what was read but deserves a look
    (entries listed twice, read once). Warnings do not make a report fail.
    """

    dataset: str
    split: str
    total: int
    problems: list[SampleProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.errors

    def __str__(self) -> str:
        head = f"{self.dataset} {self.split}: {self.total} samples, {len(self.problems)} bad"
        if self.warnings:
            head += f", {len(self.warnings)} warning(s)"
        lines = [head, *(f"  {e}" for e in self.errors), *(f"  warning: {w}" for w in self.warnings)]
        return "\n".join([*lines, *(f"  [{p.index}] {p.id}: {p.message}" for p in self.problems)])


def check_dataset(dataset: ReferringDataset, *, progress: bool = False) -> CheckReport:
    """Read every sample of ``dataset`` (image, mask, sizes, sentence) and collect problems.

    Nothing is resized or tokenized; every failure is recorded and the walk goes on. Images
    are decoded strictly (truncated or damaged files, JPEGs whose compressed data is damaged,
    16-bit, 32-bit or out-of-range float pixels are problems), whatever the dataset's
    ``verify_images`` says. Build the dataset with ``strict=False`` so that annotation problems
    (empty sentences, values of the wrong type, dangling ids, file names outside the dataset)
    are reported per sample here instead of raised by the constructor. A split whose readable
    target masks are all empty is reported in ``errors``. Files the dataset's record of checked
    files (``check_record``) lists unchanged are not checked again; those that pass are added.
    """
    report = CheckReport(dataset=dataset.name, split=dataset.split, total=len(dataset))
    report.warnings += [f"duplicate entry, read once: {d}" for d in dataset.duplicates]
    if not len(dataset):
        report.errors.append(f"{dataset.name} {dataset.split} under {dataset.root} has no samples")
        return report
    indices: Sequence[int] = range(len(dataset))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"check {dataset.name} {dataset.split}", unit="sample")
    verify, dataset.verify_images = dataset.verify_images, True
    read = non_empty = 0
    try:
        for i in indices:
            try:
                _, mask, _ = dataset.load_raw(i)
            except DatasetError as exc:
                report.problems.append(SampleProblem(i, dataset.records[i].id, str(exc)))
                continue
            read += 1
            non_empty += bool(mask.any())
    finally:
        dataset.verify_images = verify
    if read and not non_empty:
        message = dataset.empty_targets_problem(known_empty=read)
        if message:
            report.errors.append(message)
    return report


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Command-line entry point (``uncertainty-rrsis check-data``); returns the exit status (0 = no problem)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m uncertainty_rrsis.data.check",
        description="Report every bad sample of a referring-segmentation dataset.",
    )
    parser.add_argument("--dataset", required=True, choices=list_datasets(),
                        help="a registered dataset name (synthetic reads a generated RISBench-format folder)")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--split", default="all", choices=[*SPLITS, "all"])
    parser.add_argument("--check-record", type=Path,
                        help="SQLite record of the image files that passed the JPEG check: unchanged files already "
                             "in it are not checked again, and files that pass are added. Give the training "
                             f"example's (<cache_dir>/{CHECK_RECORD_NAME}, by default .cache/uncertainty_rrsis/"
                             f"{CHECK_RECORD_NAME}) and its first epoch does not check them again")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    splits = SPLITS if args.split == "all" else (args.split,)
    status = 0
    for split in splits:
        try:
            dataset = get_dataset_class(args.dataset)(args.root, split, strict=False,
                                                      check_record=args.check_record)
        except DatasetError as exc:
            print(f"{args.dataset} {split}: {exc}", file=sys.stderr)
            status = 1
            continue
        report = check_dataset(dataset, progress=not args.no_progress)
        print(report)
        status |= 0 if report.ok else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
