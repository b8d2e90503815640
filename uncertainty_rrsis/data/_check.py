"""Dataset checking: walk every sample and collect all problems (CLI in :mod:`.check`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._common import ReferringDataset
from ._errors import DatasetError

__all__ = ["CheckReport", "SampleProblem", "check_dataset"]


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
    (no sample at all, every target mask empty).
    """

    dataset: str
    split: str
    total: int
    problems: list[SampleProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.errors

    def __str__(self) -> str:
        head = f"{self.dataset} {self.split}: {self.total} samples, {len(self.problems)} bad"
        lines = [head, *(f"  {e}" for e in self.errors)]
        return "\n".join([*lines, *(f"  [{p.index}] {p.id}: {p.message}" for p in self.problems)])


def check_dataset(dataset: ReferringDataset, *, progress: bool = False) -> CheckReport:
    """Read every sample of ``dataset`` (image, mask, sizes, sentence) and collect problems.

    Nothing is resized or tokenized; every failure is recorded and the walk goes on. Images
    are decoded strictly (truncated or damaged files, JPEGs whose compressed data is damaged,
    16-bit, 32-bit or out-of-range float pixels are problems), whatever the dataset's
    ``verify_images`` says. Build the dataset with ``strict=False`` so that annotation problems
    (empty sentences, values of the wrong type, dangling ids, file names outside the dataset)
    are reported per sample here instead of raised by the constructor. A split whose readable
    target masks are all empty is reported in ``errors``.
    """
    report = CheckReport(dataset=dataset.name, split=dataset.split, total=len(dataset))
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
