"""Section ``sweep``: Base and Full inference over ``--image-sizes``, and the exponent ``k`` of
``cost ~ pixels^k`` (latency and FLOPs). The main size reuses the ``rows`` records when that section
ran first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks._common import fit_exponent

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    dtype, batch = a.dtype[0], a.main_batch
    pair = [v for v in ("Base", "Full") if v in a.variants]
    records = []
    for size in a.image_sizes:
        if size == a.main_size and "rows" in runner.run["sections"]:
            records += [dict(r, reused_from="rows") for r in runner.run["sections"]["rows"]["records"]
                        if r["variant"] in pair and r["mode"] == "infer" and "latency" in r]
            continue
        if runner.deadline.left() < a.min_section_seconds / 2:
            runner.skip(f"sweep {size}")
            continue
        records += runner.measure_models(pair, mode="infer", dtype=dtype, batch=batch, size=size, memory=True)
    fits = []
    for v in pair:
        pts = sorted((r for r in records if r["variant"] == v and "latency" in r), key=lambda r: r["image_size"])
        px = [r["image_size"] ** 2 for r in pts]
        fits.append({"variant": v,
                     "latency": fit_exponent(px, [r["latency"]["median_ms"] for r in pts]),
                     "flops": fit_exponent(px, [r["gflops_per_image"] for r in pts])})
    return {"records": records, "fits": fits}
