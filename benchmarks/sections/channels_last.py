"""Section ``channels_last``: Base and Full at the main setting with a ``channels_last`` model and
input, inference and training step (no FLOPs: the same as the ``rows`` section's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    pair = [v for v in ("Base", "Full") if v in a.variants]
    records = []
    for mode in ("infer", "train"):
        if runner.deadline.left() < a.min_section_seconds / 2:
            runner.skip(f"channels_last {mode}")
            continue
        variants = pair if mode == "infer" else [v for v in pair if v in a.train_variants]
        records += runner.measure_models(variants, mode=mode, dtype=a.dtype[0], batch=a.main_batch,
                                         size=a.main_size, channels_last=True, flops=False)
    return {"records": records}
