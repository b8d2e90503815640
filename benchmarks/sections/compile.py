"""Section ``compile``: ``torch.compile`` (``--compile-backend``, static shapes) of Full, then Base,
inference at ``--compile-batch`` and the main size, for every ``--compile-mode``.

Each variant is compiled with ``fullgraph=True``; on a graph break the breaks are explained
(``torch._dynamo.explain``) and the model compiled without it. Compile time is the first call. Eager
and compiled Full and Base are then timed in one interleaved table (the compiled Full/Base ratio comes
with a paired spread), and their steady-state throughput measured with calls queued back to back.
``compile_one_mode`` is shared with the ``cudagraphs`` section.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch._dynamo

from benchmarks._common import autocast, log, sanitize, short_error
from benchmarks._measure import queued_throughput, sync, time_interleaved

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    """Every ``--compile-mode`` (e.g. default and ``reduce-overhead``, which captures CUDA graphs) in
    turn; the section is rewritten (as partial) after each mode."""
    records: list[dict[str, Any]] = []
    for mode in runner.args.compile_mode:
        records += compile_one_mode(runner, None if mode == "default" else mode)
        runner.write("compile", {"records": records, "timed_together": True, "partial": True})
    return {"records": records, "timed_together": True}


def compile_one_mode(runner: Runner, compile_mode: str | None) -> list[dict[str, Any]]:
    """Compile Full then Base in ``compile_mode`` (None = default), time eager and compiled together,
    then their queued throughput; one record per variant."""
    a = runner.args
    device = runner.device
    dtype, batch, size = a.dtype[0], a.compile_batch, a.main_size
    x: dict[str, torch.Tensor] = {}
    records: list[dict[str, Any]] = []
    fns: dict[str, Callable[[], Any]] = {}
    for v in [v for v in ("Full", "Base") if v in a.variants]:
        if runner.deadline.left() < a.compile_min_seconds:
            log(f"  compile {v}: skipped, {runner.deadline.left():.0f} s left < {a.compile_min_seconds} s")
            runner.skip(f"compile {v}")
            continue
        model = runner.model(v).eval()
        x = x or runner.inputs(batch, size)  # the same inputs for every variant
        rec: dict[str, Any] = {"variant": v, "mode": "infer", "dtype": dtype, "batch": batch, "image_size": size,
                               "backend": a.compile_backend, "compile_mode": compile_mode or "default"}
        try:
            compiled_model = torch.compile(model, fullgraph=True, dynamic=False, backend=a.compile_backend,
                                           mode=compile_mode)
            compiled = runner.infer_fn(compiled_model, x, dtype)
            t0 = time.perf_counter()
            try:
                compiled()
                sync(device)
                rec["fullgraph"] = True
                rec["graph_breaks"] = 0
            except Exception as err:  # noqa: BLE001 - a graph break under fullgraph=True
                rec["fullgraph"] = False
                rec["fullgraph_error"] = short_error(err, 1500)
                log(f"  compile {v}: fullgraph=True failed: {short_error(err, 300)}")
                with torch.no_grad(), autocast(device, dtype):
                    explained = torch._dynamo.explain(model)(x["images"], x["input_ids"], x["attention_mask"])
                rec["graph_breaks"] = int(explained.graph_break_count)
                rec["graph_count"] = int(explained.graph_count)
                rec["break_reasons"] = [sanitize(str(getattr(r, "reason", r)))[:400]
                                        for r in explained.break_reasons[:10]]
                compiled_model = torch.compile(model, fullgraph=False, dynamic=False,
                                               backend=a.compile_backend, mode=compile_mode)
                compiled = runner.infer_fn(compiled_model, x, dtype)
                t0 = time.perf_counter()
                compiled()
                sync(device)
            rec["compile_s"] = time.perf_counter() - t0  # first call: tracing + compilation + one run
            t1 = time.perf_counter()
            compiled()
            sync(device)
            rec["second_call_ms"] = (time.perf_counter() - t1) * 1e3
            log(f"  compile {v}: fullgraph={rec['fullgraph']} breaks={rec['graph_breaks']} "
                f"compile {rec['compile_s']:.1f} s, second call {rec['second_call_ms']:.1f} ms")
            fns[f"{v} eager"] = runner.infer_fn(model, x, dtype)
            fns[f"{v} compiled"] = compiled
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            rec["error"] = short_error(err, 1500)
        records.append(rec)
    if fns:
        log(f"  timing {', '.join(fns)} interleaved")
        timing = time_interleaved(fns, device, warmup=a.warmup, repeats=a.repeats,
                                  max_seconds=a.max_seconds * 2 if a.max_seconds else None,
                                  min_repeats=min(a.min_repeats, a.repeats), log=log)
        for rec in records:
            v = rec["variant"]
            if f"{v} eager" not in timing:
                continue
            rec["eager"], rec["compiled"] = timing[f"{v} eager"], timing[f"{v} compiled"]
            rec["speedup"] = rec["eager"]["median_ms"] / rec["compiled"]["median_ms"]
            log(f"  {v}: eager {rec['eager']['median_ms']:.2f} ms, compiled {rec['compiled']['median_ms']:.2f} ms "
                f"(x{rec['speedup']:.2f})")
        for rec in records:  # steady state: calls queued back to back, as a serving loop runs them
            v = rec["variant"]
            if "speedup" not in rec:
                continue
            rec["throughput_queued"] = {}
            for kind in ("eager", "compiled"):
                calls = runner.queued_calls(rec[kind]["median_ms"])
                try:
                    rec["throughput_queued"][kind] = queued_throughput(fns[f"{v} {kind}"], device,
                                                                       items_per_call=batch, calls=calls, warmup=2)
                except Exception as err:  # noqa: BLE001 - keep the timing table
                    rec["throughput_queued"][kind] = {"error": short_error(err, 200)}
            log(f"  {v} batch {batch} queued: " + ", ".join(
                f"{k} {t['items_per_s']:.1f} images/s" for k, t in rec["throughput_queued"].items()
                if "items_per_s" in t))
    del fns, x
    torch._dynamo.reset()
    runner.free()
    return records
