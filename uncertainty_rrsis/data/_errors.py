"""Errors raised by the dataset readers (public through :mod:`uncertainty_rrsis.data`)."""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetLayoutError", "EmptySplitError", "SampleError"]


class DatasetError(ValueError):
    """Base class of every dataset problem; the message names the file and the fix."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A root folder, split file or annotation file is missing or malformed.

    The message names the missing path and shows the on-disk layout the reader expects.
    """


class SampleError(DatasetError):
    """One sample cannot be read: missing or corrupt image/mask, size mismatch, empty sentence."""


class EmptySplitError(DatasetError):
    """A split lists no sample at all (its split file or annotations hold none for it)."""
