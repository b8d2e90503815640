"""Datasets of referring remote-sensing segmentation: readers, synthetic benchmark, batching.

Readers (one :class:`torch.utils.data.Dataset` per benchmark, same sample dict):
:class:`RRSISD`, :class:`RefSegRS`, :class:`RISBench`. The synthetic benchmark is written in
the RISBench layout by :func:`ensure_synthetic` / :func:`generate_synthetic`. Batch with
:func:`collate`; find every bad sample with :func:`check_dataset`.

This package needs numpy, pillow (and pycocotools for polygon masks); it never imports
the reference model, timm or transformers: pass a tokenizer object in.
"""

from ._check import CheckReport, SampleProblem, check_dataset
from ._common import ReferringDataset
from ._errors import DatasetError, DatasetLayoutError, SampleError
from .collate import collate
from .refsegrs import RefSegRS
from .risbench import RISBench
from .rrsisd import RRSISD
from .synthetic import SyntheticConfig, SyntheticSample, ensure_synthetic, generate_synthetic, render_sample
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeNormalize

__all__ = [
    "ReferringDataset",
    "RRSISD",
    "RefSegRS",
    "RISBench",
    "SyntheticConfig",
    "SyntheticSample",
    "ensure_synthetic",
    "generate_synthetic",
    "render_sample",
    "collate",
    "check_dataset",
    "CheckReport",
    "SampleProblem",
    "ResizeNormalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetError",
    "DatasetLayoutError",
    "SampleError",
]
