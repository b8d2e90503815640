"""The dataset registry: one table from a dataset name to its reader class.

Training (``--dataset``), ``examples/evaluate.py`` and the data check
(``python -m uncertainty_rrsis.data.check``) look names up here, so a reader registered once
is accepted everywhere::

    from uncertainty_rrsis.data import RISBench, register_dataset

    @register_dataset("mybench")
    class MyBenchmark(RISBench):          # same sample dict, another folder layout
        ...

Built in, each registered where it is defined: ``rrsisd`` (:class:`RRSISD`), ``refsegrs``
(:class:`RefSegRS`), ``risbench`` (:class:`RISBench`) and ``synthetic``
(:class:`~uncertainty_rrsis.data.SyntheticBenchmark`, generated on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from .base import ReferringDataset

__all__ = ["register_dataset", "get_dataset_class", "list_datasets"]

_READERS: dict[str, type[ReferringDataset]] = {}
_R = TypeVar("_R", bound=type[ReferringDataset])


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_READERS)


@overload
def register_dataset(name: str, reader: None = None, *, overwrite: bool = False) -> Callable[[_R], _R]: ...
@overload
def register_dataset(name: str, reader: _R, *, overwrite: bool = False) -> _R: ...
def register_dataset(name, reader=None, *, overwrite=False):
    """Make ``reader`` available under ``name``; without ``reader``, a class decorator that does so.

    Args:
        name: the name given to ``--dataset`` (lower case, no spaces).
        reader: a :class:`~uncertainty_rrsis.data.ReferringDataset` subclass, called as
            ``reader(root, split, tokenizer=..., max_tokens=..., image_size=..., return_orig_mask=...,
            check_record=...)``.
        overwrite: replace a reader already registered under ``name``.

    Returns:
        ``reader`` (or the decorator).

    Raises:
        ValueError: ``name`` is taken (without ``overwrite``) or is not a plain lower-case word.
        TypeError: ``reader`` is not a ``ReferringDataset`` subclass.
    """
    if not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"a dataset name must be a non-empty lower-case word without spaces; got {name!r}")
    if reader is None:
        return lambda cls: register_dataset(name, cls, overwrite=overwrite)
    if not (isinstance(reader, type) and issubclass(reader, ReferringDataset)):
        raise TypeError(f"register_dataset({name!r}): expected a ReferringDataset subclass; got {reader!r}")
    if name in _READERS and not overwrite and _READERS[name] is not reader:
        raise ValueError(
            f"dataset {name!r} is already registered ({_READERS[name].__name__}); pass overwrite=True to replace it"
        )
    _READERS[name] = reader
    return reader


def get_dataset_class(name: str) -> type[ReferringDataset]:
    """The reader class registered under ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known names.
    """
    try:
        return _READERS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())} "
            "(add one with uncertainty_rrsis.data.register_dataset)"
        ) from None
