"""Datasets of referring remote-sensing segmentation: readers, synthetic benchmark, batching.

Readers (one :class:`torch.utils.data.Dataset` per benchmark, same sample dict):
:class:`RRSISD`, :class:`RefSegRS`, :class:`RISBench`, and :class:`SyntheticBenchmark`, the
synthetic benchmark, generated on first use in the RISBench layout (:func:`ensure_synthetic` /
:func:`generate_synthetic`). A reader of your own subclasses :class:`ReferringDataset`
(:mod:`.base`: :class:`Record`, :func:`join_name`, :func:`read_phrase_file`). Batch with
:func:`collate`; find every bad sample with :func:`check_dataset`. Datasets are found by name
through one registry (:func:`get_dataset_class`, :func:`register_dataset`, :func:`list_datasets`);
:func:`read_image` (with its record of checked files, :class:`CheckedFiles`) and
:func:`tokenize` are the input pipeline's file reader and tokenizer call,
for code that prepares single samples the way the readers do; :func:`image_to_rgb` applies the
reader's rules on pixel formats to a picture already in memory.

This package needs numpy, pillow (and pycocotools for polygon masks); it never imports
the reference model, timm or transformers: pass a tokenizer object in.
"""

from ._checked import CHECK_RECORD_NAME, CheckedFiles
from ._errors import DatasetError, DatasetLayoutError, EmptySplitError, SampleError
from ._io import DEFAULT_MAX_PIXELS, image_to_rgb, read_image
from ._text import tokenize
from .base import SPLITS, DuplicateEntryWarning, Record, ReferringDataset, join_name, read_phrase_file
from .collate import collate
from .refsegrs import RefSegRS
from .registry import get_dataset_class, list_datasets, register_dataset
from .risbench import RISBench
from .rrsisd import RRSISD
from .synthetic import (
    SyntheticBenchmark,
    SyntheticConfig,
    SyntheticSample,
    clean_stale_temporaries,
    ensure_synthetic,
    generate_synthetic,
    render_sample,
)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeNormalize

__all__ = [
    "ReferringDataset",
    "Record",
    "SPLITS",
    "join_name",
    "read_phrase_file",
    "DuplicateEntryWarning",
    "RRSISD",
    "RefSegRS",
    "RISBench",
    "SyntheticBenchmark",
    "SyntheticConfig",
    "SyntheticSample",
    "ensure_synthetic",
    "generate_synthetic",
    "render_sample",
    "clean_stale_temporaries",
    "collate",
    "get_dataset_class",
    "list_datasets",
    "register_dataset",
    "read_image",
    "CheckedFiles",
    "CHECK_RECORD_NAME",
    "DEFAULT_MAX_PIXELS",
    "image_to_rgb",
    "tokenize",
    "check_dataset",
    "CheckReport",
    "SampleProblem",
    "ResizeNormalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetError",
    "EmptySplitError",
    "DatasetLayoutError",
    "SampleError",
]

_LAZY = {"CheckReport": "check", "SampleProblem": "check", "check_dataset": "check"}


def __getattr__(name: str):
    # the data check is imported on first use, so ``python -m uncertainty_rrsis.data.check`` runs it fresh
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
