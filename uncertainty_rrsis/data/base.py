"""The base class of the dataset readers and its helpers: records, sample assembly, split files.

A *record* is one entry of a split: an image path, one or more sentences (several only
for RRSIS-D training refs, one of which is drawn per access), where its mask comes from,
an identifier and tags. A reader subclasses :class:`ReferringDataset`, builds the records
(:meth:`~ReferringDataset.build_records`) and says how to read a mask
(:meth:`~ReferringDataset.read_mask`); :func:`join_name` builds paths from annotation text safely,
:func:`read_phrase_file` reads the ``<name> <sentence>`` split files of RefSegRS and RISBench.
Register the reader with :func:`~uncertainty_rrsis.data.register_dataset` to use it by name.

Sample dict (one ``__getitem__``), S = ``image_size``, L = ``max_tokens``:

========================  =========================  ==========================================
key                       type / shape               meaning
========================  =========================  ==========================================
``image``                 float32 (3, S, S)          resized, ImageNet-normalised image
``mask``                  bool (S, S)                resized target mask (nearest)
``sentence``              str                        the referring expression
``input_ids``             long (L,)                  only when a tokenizer is given
``text_padding_mask``     bool (L,)                  True = padding; only with a tokenizer
``orig_size``             tuple (H, W)               size of the image file
``id``                    str                        unique within the split
``tags``                  dict                       e.g. ``{"category": "ship"}``; may be empty
``orig_mask``             bool (H, W)                only with ``return_orig_mask=True``
========================  =========================  ==========================================
"""

from __future__ import annotations

import ntpath
import posixpath
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ._checked import CheckedFiles
from ._errors import DatasetError, DatasetLayoutError, EmptySplitError, SampleError
from ._io import mask_value_range, read_image
from ._text import tokenize
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeNormalize

__all__ = [
    "ReferringDataset", "Record", "SPLITS", "read_phrase_file", "join_name", "type_name", "mask_values_hint",
    "DuplicateEntryWarning",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One entry of a split (see the module docstring).

    ``problem`` is set when the annotation itself is known to be bad (a value of the wrong
    type, a file name outside the dataset): strict construction lists it, and reading the
    sample raises it.
    """

    id: str
    image_path: Path
    sentences: tuple[str, ...]
    mask_source: Any
    where: str
    tags: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None


def type_name(value: Any) -> str:
    """A short description of a value of the wrong type, for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def join_name(folder: Path, name: Any, *, what: str, where: str) -> tuple[Path, str | None]:
    """``folder / name`` for a file name read from an annotation file, and the problem with it.

    The name must be a non-empty relative path that stays inside ``folder`` once ``..`` parts
    are resolved (checked on the text, so a dataset folder made of symbolic links still
    works). Returns ``(path, None)``, or ``(folder, message)`` naming ``where``.
    """
    if not isinstance(name, str):
        return folder, f"{where}: {what} must be a string; got {type_name(name)}"
    if not name.strip() or "\x00" in name:
        return folder, f"{where}: {what} {name!r} is empty or not a file name"
    if posixpath.isabs(name) or ntpath.isabs(name) or ntpath.splitdrive(name)[0]:
        return folder, (
            f"{where}: {what} {name!r} is an absolute path; names in annotation files must be relative "
            f"to {folder} (the file is not read)"
        )
    normal = posixpath.normpath(name)
    for form in (normal, posixpath.normpath(name.replace("\\", "/"))):  # also as a Windows path
        if form in (".", "..") or form.startswith("../"):
            return folder, (
                f"{where}: {what} {name!r} points outside {folder}; names in annotation files must stay "
                "inside the dataset folder (the file is not read)"
            )
    return folder.joinpath(*normal.split("/")), None


def mask_values_hint(records: Sequence[Record], *, threshold: int, rule: str, layout: str) -> str:
    """What the mask files hold, for the all-empty message: their largest value and a guess."""
    highest = None
    for record in records[:20]:
        try:
            highest = max(highest or 0, mask_value_range(record.mask_source, layout=layout)[1])
        except DatasetError:
            continue
    if highest is None:
        return rule
    text = f"{rule}; the largest value in these mask files is {highest:g}"
    if 0 < highest <= threshold:
        text += f" - were they saved as 0/{highest:g}? Save masks as 0 / 255"
    elif highest == 0:
        text += " - the mask files are blank"
    return text


def read_phrase_file(path: Path, *, layout: str) -> list[tuple[int, str, str]]:
    """Parse an ``output_phrase_<split>.txt`` file: lines ``<name> <sentence...>``.

    Returns (line number, name, sentence) for each non-blank line; the sentence keeps its
    inner spacing and loses surrounding whitespace (it may be empty: checked later).
    """
    if not path.is_file():
        raise DatasetLayoutError(f"split file not found: {path}\nExpected layout:\n{layout}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"cannot read split file {path}: {exc}") from exc
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        out.append((number, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out


class DuplicateEntryWarning(UserWarning):
    """A split lists the same entry (same id, image and sentences) more than once; it is read once."""


def _drop_duplicates(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """``records`` without repeats of an entry (same id, image and sentences: a line given twice, an
    RRSIS-D ref id listed twice), the first kept; and where each repeat was, for the report."""
    first: dict[tuple[str, str, tuple[str, ...]], tuple[int, Record]] = {}
    kept, repeats = [], []
    for i, r in enumerate(records):
        key = (r.id, str(r.image_path), tuple(r.sentences))
        if key in first:
            j, original = first[key]
            repeats.append(f"{r.id!r} at {r.where} (entry {i}) repeats {original.where} (entry {j})")
            continue
        first[key] = (i, r)
        kept.append(r)
    return kept, repeats


def _unique_ids(ids: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        k = seen.get(i, 0)
        seen[i] = k + 1
        out.append(i if k == 0 else f"{i}#{k}")
    return out


class ReferringDataset(Dataset):
    """Base class of the readers: a map-style dataset of referring samples.

    Every reader takes these arguments (keyword-only after ``root`` and ``split``); each
    item is the sample dict described in the module docstring.

    Args:
        root: dataset folder (layout in each reader's docstring).
        split: ``"train"``, ``"val"`` or ``"test"``.
        tokenizer: a Hugging Face-style tokenizer (see :func:`~._text.tokenize`); without
            one, samples carry no ``input_ids``/``text_padding_mask``.
        max_tokens: L, token ids per sentence incl. special tokens (20 in the field).
        image_size: S or (S_h, S_w) of the resized image and mask (480 in the field).
        resize_backend: ``"pil"`` (LAVT-exact) or ``"torch"``; see :mod:`.transforms`.
        mean, std: normalisation (ImageNet by default).
        return_orig_mask: also return the original-size mask as ``orig_mask`` (for
            evaluation at the original size); off by default to keep batches light.
        strict: check the annotations at construction and raise one error that lists
            every bad entry (empty sentences, values of the wrong type, dangling annotation
            ids, file names outside the dataset folder), and read masks until one is
            non-empty: a split whose targets are all empty is an error (usually masks saved
            with other values than the reader's threshold expects). With ``strict=False``
            bad entries raise only when accessed, which is what
            :func:`~.check.check_dataset` uses to report them all. A split without any
            sample is an error either way.
        verify_images: check the compressed data of JPEG images and masks before decoding
            (Pillow decodes a damaged JPEG to a wrong picture without an error); costs about
            0.1-0.2 s per MB of JPEG data. See :func:`~uncertainty_rrsis.data.read_image`. Each file
            is checked once while it does not change (:attr:`checked_files`).
        check_record: an SQLite file that records the files that passed the check, by path, size and
            modification time, shared by the loader's worker processes and by later runs (the
            training example keeps one in its cache folder); None: the record lives in this
            process's memory (worker processes that end with their epoch take theirs with them).

    Attributes:
        checked_files: the :class:`~uncertainty_rrsis.data.CheckedFiles` record; readers pass it to
            :func:`~uncertainty_rrsis.data.read_image` and ``read_mask_file``.
    """

    #: Short dataset name (used by :mod:`.check`).
    name: ClassVar[str] = "dataset"
    #: Human-readable description of the expected folder layout (used in errors).
    layout: ClassVar[str] = ""
    #: True for a benchmark that is generated on first use into a cache folder (by :meth:`generate`)
    #: instead of read from a folder the user gives.
    generated: ClassVar[bool] = False

    @classmethod
    def generate(cls, cache_dir: str | Path, *, image_size: int, sizes: Mapping[str, int], seed: int,
                 progress: bool = False) -> Path:
        """Generate the dataset into ``cache_dir`` (once; later calls find it) and return its root.

        Only for readers with ``generated = True``.

        Args:
            cache_dir: the folder of generated datasets.
            image_size: the side of the images.
            sizes: samples per split, ``{"train": ..., "val": ..., "test": ...}``.
            seed: the generator seed.
            progress: show a progress bar.
        """
        raise NotImplementedError(f"{cls.__name__} reads a dataset folder; it does not generate one")

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        tokenizer: Any = None,
        max_tokens: int = 20,
        image_size: int | Sequence[int] = 480,
        resize_backend: str = "pil",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        return_orig_mask: bool = False,
        strict: bool = True,
        verify_images: bool = True,
        check_record: str | Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (room for special tokens); got {max_tokens}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetLayoutError(
                f"{self.name} root folder not found: {self.root}\nExpected layout:\n{self.layout}"
            )
        self.split = split
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.transform = ResizeNormalize(image_size=image_size, mean=mean, std=std, backend=resize_backend)  # type: ignore[arg-type]
        self.return_orig_mask = bool(return_orig_mask)
        self.verify_images = bool(verify_images)
        self.checked_files = CheckedFiles(check_record)
        records = self.build_records()
        if not records:
            raise EmptySplitError(
                f"{self.name} {split} under {self.root} has no samples: {self._empty_split_detail()}"
            )
        records, self.duplicates = _drop_duplicates(records)
        if self.duplicates and strict:
            shown = "\n  ".join(self.duplicates[:5])
            more = f"\n  ... and {len(self.duplicates) - 5} more" if len(self.duplicates) > 5 else ""
            warnings.warn(f"{self.name} {split} under {self.root}: {len(self.duplicates)} duplicate entr"
                          f"{'y' if len(self.duplicates) == 1 else 'ies'} read once (every sentence counts once):"
                          f"\n  {shown}{more}", DuplicateEntryWarning, stacklevel=2)
        ids = _unique_ids([r.id for r in records])
        self.records: list[Record] = [
            r if r.id == i else Record(i, r.image_path, r.sentences, r.mask_source, r.where, r.tags, r.problem)
            for r, i in zip(records, ids, strict=True)
        ]
        if strict:
            problems = self.annotation_problems()
            if problems:
                shown = "\n  ".join(problems[:20])
                more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
                raise DatasetError(
                    f"{len(problems)} bad annotation(s) in {self.name} {split} under {self.root}:\n  "
                    f"{shown}{more}\n(pass strict=False and run check_dataset() for a full report)"
                )
            empty = self.empty_targets_problem()
            if empty:
                raise DatasetError(empty)

    # -- to implement in subclasses ---------------------------------------------------
    def build_records(self) -> list[Record]:
        """The records of ``self.split`` under ``self.root``: one per referring expression (or per
        RRSIS-D training ref). Record an entry that cannot be used in ``Record.problem`` instead of
        raising, so that ``strict=True`` and :func:`~uncertainty_rrsis.data.check_dataset` report
        every bad entry at once."""
        raise NotImplementedError

    def read_mask(self, record: Record) -> np.ndarray:
        """Return the original-size mask of ``record`` as (H, W) bool."""
        raise NotImplementedError

    def _mask_description(self, record: Record) -> str:
        return str(record.mask_source)

    def _empty_split_detail(self) -> str:
        """Why the split has no samples (which file lists none); the reader knows best."""
        return "its annotation files list none"

    def _empty_masks_hint(self, records: Sequence[Record]) -> str:
        """What an all-empty split usually means for this reader (``records``: those read)."""
        return ""

    # -- shared ---------------------------------------------------------------------
    def annotation_problems(self) -> list[str]:
        """Problems visible without opening images: bad values and names in the annotation
        files, empty sentences (and reader-specific ones)."""
        out: dict[str, None] = {}  # in order, each once (a ref's problem is shared by its sentences)
        for r in self.records:
            if r.problem:
                out[r.problem] = None
            elif not r.sentences or any(not s.strip() for s in r.sentences):
                out[f"{r.where}: empty sentence for sample {r.id!r}"] = None
        return list(out)

    def empty_targets_problem(self, *, known_empty: int | None = None) -> str | None:
        """None, or a message saying that every target mask of the split is empty.

        Without ``known_empty``, masks are read in a fixed shuffled order until one is
        non-empty (on a sound split that is usually the first); only a split whose readable
        masks are all empty is read to the end. ``known_empty`` (from a walk over every
        sample, as :func:`~.check.check_dataset` does) skips the reading: it is the number of
        masks read, all of them empty.
        """
        if known_empty is None:
            order = np.random.default_rng(0).permutation(len(self.records))
            read: list[Record] = []
            for i in order:
                record = self.records[int(i)]
                if record.problem:
                    continue
                try:
                    mask = self.read_mask(record)
                except DatasetError:
                    continue
                if mask.any():
                    return None
                read.append(record)
            count = len(read)
        else:
            count = known_empty
            read = [r for r in self.records if not r.problem][:20]
        if count == 0:
            return None
        unread = len(self.records) - count
        also = f" ({unread} could not be read)" if unread > 0 else ""
        hint = self._empty_masks_hint(read)
        return (
            f"all {count} target masks of {self.name} {self.split} under {self.root} are empty{also}: "
            f"nothing to segment in any sample{'; ' + hint if hint else ''}"
        )

    def __len__(self) -> int:
        return len(self.records)

    def _pick_sentence(self, record: Record) -> str:
        if len(record.sentences) == 1:
            return record.sentences[0]
        # torch's RNG: seeded per DataLoader worker and by torch.manual_seed.
        return record.sentences[int(torch.randint(len(record.sentences), ()).item())]

    def load_raw(self, index: int) -> tuple[Image.Image, np.ndarray, Record]:
        """Read and validate one record without resizing.

        Returns the RGB image (W x H), its (H, W) bool mask and the record. Raises
        :class:`SampleError` naming the file for a missing/corrupt image or mask, a mask
        whose size differs from its image, or an empty sentence.
        """
        record = self.records[index]
        if record.problem:
            raise SampleError(record.problem)
        if not record.sentences or any(not s.strip() for s in record.sentences):
            raise SampleError(f"{record.where}: empty sentence for sample {record.id!r}")
        image = read_image(record.image_path, layout=self.layout, verify=self.verify_images,
                           checked=self.checked_files)
        mask = self.read_mask(record)
        if mask.shape != (image.height, image.width):
            raise SampleError(
                f"mask {self._mask_description(record)} is {mask.shape[0]}x{mask.shape[1]} (HxW) but image "
                f"{record.image_path} is {image.height}x{image.width}; a mask must have its image's size "
                "(it is never resized silently)"
            )
        return image, mask, record

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, record = self.load_raw(index)
        sentence = self._pick_sentence(record)
        image_t, mask_t = self.transform(image, mask)
        sample: dict[str, Any] = {
            "image": image_t,
            "mask": mask_t,
            "sentence": sentence,
            "orig_size": (image.height, image.width),
            "id": record.id,
            "tags": dict(record.tags),
        }
        if self.tokenizer is not None:
            sample["input_ids"], sample["text_padding_mask"] = tokenize(
                self.tokenizer, sentence, max_tokens=self.max_tokens
            )
        if self.return_orig_mask:
            sample["orig_mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, image_size={self.transform.size})"
        )
