"""Section ``rows``: the ablation rows (``--variants``: Base, +UGF, +UDLR, Full) at the main setting.

The first ``--dtype``, ``--main-batch`` and ``--main-size``, random init: inference, then one training
step (forward, RiskGuidedLoss, backward, AdamW step) of ``--train-variants``; latency, memory, FLOPs
and parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    dtype, batch, size = a.dtype[0], a.main_batch, a.main_size
    records = runner.measure_models(a.variants, mode="infer", dtype=dtype, batch=batch, size=size)
    if runner.deadline.left() > a.min_section_seconds / 2:
        records += runner.measure_models(a.train_variants, mode="train", dtype=dtype, batch=batch, size=size)
    else:
        runner.skip("rows train")
    return {"records": records}
