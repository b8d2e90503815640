"""Section ``batch``: Base and Full at the ``--batch-sizes`` other than the main batch, eager:
inference (with the steady-state throughput of calls queued back to back) and training step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks._common import log, short_error
from benchmarks._measure import queued_throughput

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    pair = [v for v in ("Base", "Full") if v in a.variants]
    records = []
    for batch in a.batch_sizes:
        if batch == a.main_batch:
            continue
        for mode in ("infer", "train"):
            if runner.deadline.left() < a.min_section_seconds / 2:
                runner.skip(f"batch {batch} {mode}")
                continue
            variants = pair if mode == "infer" else [v for v in pair if v in a.train_variants]
            measured = runner.measure_models(variants, mode=mode, dtype=a.dtype[0], batch=batch,
                                             size=a.main_size, flops=False)
            if mode == "infer":
                add_queued_throughput(runner, measured, batch)
            records += measured
    return {"records": records}


def add_queued_throughput(runner: Runner, records: list[dict[str, Any]], batch: int) -> None:
    """Steady-state images/s of the inference records: calls queued back to back, one sync at the end."""
    x = runner.inputs(batch, runner.args.main_size)
    for rec in records:
        if "error" in rec:
            continue
        fn = runner.infer_fn(runner.model(rec["variant"]).eval(), x, rec["dtype"])
        calls = runner.queued_calls(rec["latency"]["median_ms"])
        try:
            rec["throughput_queued"] = queued_throughput(fn, runner.device, items_per_call=batch, calls=calls,
                                                         warmup=2)
            log(f"  {rec['variant']} batch {batch}: {rec['throughput_queued']['items_per_s']:.1f} images/s queued "
                f"({calls} calls)")
        except Exception as err:  # noqa: BLE001 - record OOM and other failures, keep going
            rec["throughput_queued"] = {"error": short_error(err, 200)}
    del x
    runner.free()
