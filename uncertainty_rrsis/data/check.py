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
from pathlib import Path

from ._check import check_dataset
from ._common import SPLITS
from ._errors import DatasetError
from .registry import get_dataset_class, list_datasets

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 = no problem)."""
    parser = argparse.ArgumentParser(
        prog="python -m uncertainty_rrsis.data.check",
        description="Report every bad sample of a referring-segmentation dataset.",
    )
    parser.add_argument("--dataset", required=True, choices=list_datasets(),
                        help="a registered dataset name (synthetic reads a generated RISBench-format folder)")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--split", default="all", choices=[*SPLITS, "all"])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    splits = SPLITS if args.split == "all" else (args.split,)
    status = 0
    for split in splits:
        try:
            dataset = get_dataset_class(args.dataset)(args.root, split, strict=False)
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
