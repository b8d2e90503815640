"""The reader of the synthetic benchmark, registered as ``synthetic``: generated on first use.

The benchmark is written in the RISBench layout, so :class:`SyntheticBenchmark` reads it as
:class:`~uncertainty_rrsis.data.RISBench` does; what it adds is :meth:`SyntheticBenchmark.generate`,
which writes it once into a cache folder (:func:`~.cache.ensure_synthetic`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..registry import register_dataset
from ..risbench import RISBench
from .cache import ensure_synthetic

__all__ = ["SyntheticBenchmark"]


@register_dataset("synthetic")
class SyntheticBenchmark(RISBench):
    """The synthetic benchmark: a RISBench-layout folder that :meth:`generate` writes once."""

    name = "synthetic"
    generated = True

    @classmethod
    def generate(cls, cache_dir: str | Path, *, image_size: int, sizes: Mapping[str, int], seed: int,
                 progress: bool = False) -> Path:
        """Generate the benchmark into ``cache_dir`` once (a complete cached copy is reused); its root."""
        return ensure_synthetic(cache_dir, seed=seed, image_size=image_size, n_train=sizes["train"],
                                n_val=sizes["val"], n_test=sizes["test"], progress=progress)
