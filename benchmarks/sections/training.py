"""Section ``training``: training throughput and the largest batch that fits, eager then compiled
(Full, then Base, of ``--train-variants``) at ``--compile-batch`` and the main size.

Throughput is the steady state of training steps queued back to back. The largest batch is searched
against ``--memory-limit-gib`` (on CUDA by default the free device memory): a line through the
measured peaks predicts the next batch to try, within a bracket (a batch that fits, one that does not)
narrowed to 2 %. The section is rewritten (as partial) after each variant, so a time-out keeps them.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import TYPE_CHECKING, Any

import torch

from benchmarks._common import is_oom, log, short_error
from benchmarks._measure import peak_memory, queued_throughput, sync, time_once

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    dtype, batch, size = a.dtype[0], a.compile_batch, a.main_size
    variants = [v for v in ("Full", "Base") if v in a.train_variants]
    records: list[dict[str, Any]] = []
    for kind in ("eager", "compiled"):
        for v in variants:
            need = a.compile_min_seconds if kind == "compiled" else a.min_section_seconds / 2
            if runner.deadline.left() < need:
                log(f"  training {kind} {v}: skipped, {runner.deadline.left():.0f} s left < {need:.0f} s")
                runner.skip(f"training {kind} {v}")
                continue
            records.append(_training_one(runner, v, kind, dtype, batch, size))
            runner.free()
            runner.write("training", {"records": records, "partial": True})  # a time-out keeps these
    limit = memory_limit(runner)
    return {"records": records, "memory_limit_mib": limit / 2**20 if math.isfinite(limit) else None}


def memory_limit(runner: Runner) -> float:
    """Bytes one training step may use: ``--memory-limit-gib``, else on CUDA what is free now plus what
    the allocator holds in its cache (reusable), else infinite."""
    if runner.args.memory_limit_gib:
        return runner.args.memory_limit_gib * 2**30
    if runner.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(runner.device)
        return float(free + torch.cuda.memory_reserved(runner.device) - torch.cuda.memory_allocated(runner.device))
    return math.inf


def _training_one(runner: Runner, variant: str, kind: str, dtype: str, batch: int, size: int) -> dict[str, Any]:
    """Throughput, first-step time and peak memory of one variant's training step (``kind``: eager or
    compiled), then its largest batch when there is a memory limit."""
    a = runner.args
    device = runner.device
    model = runner.model(variant)
    rec: dict[str, Any] = {"variant": variant, "kind": kind, "mode": "train", "dtype": dtype, "batch": batch,
                           "image_size": size}
    net = model
    if kind == "compiled":
        import torch._dynamo

        torch._dynamo.reset()
        # static shapes for the throughput batch; the largest-batch search then compiles once more with
        # a dynamic batch (torch.compile's default) and reuses that graph for every other batch
        net = torch.compile(model, backend=a.compile_backend)
    try:
        x = runner.inputs(batch, size)
        step = runner.train_fn(net, x, dtype)
        t0 = time.perf_counter()
        step()
        sync(device)
        rec["first_step_s"] = time.perf_counter() - t0  # compiled: tracing + compilation + one step
        step()
        median_ms = min(time_once(step, device) for _ in range(2)) * 1e3
        calls = runner.queued_calls(median_ms)
        rec["throughput_queued"] = queued_throughput(step, device, items_per_call=batch, calls=calls, warmup=1)
        step.release()  # the memory measurement starts without gradients and optimizer state
        mem = peak_memory(step, device)
        rec["peak_delta_mib"] = mem["peak_delta_mib"]
        step.release()
        del step, x
        runner.free()
        limit = memory_limit(runner)
        log(f"  training {kind} {variant} batch {batch}: {rec['throughput_queued']['items_per_s']:.1f} images/s "
            f"queued, first step {rec['first_step_s']:.1f} s, peak {mem['peak_delta_mib']:.0f} MiB above the "
            f"weights")
        if math.isfinite(limit):
            rec["memory_limit_mib"] = limit / 2**20
            rec["largest_batch"] = _largest_batch(runner, net, kind, dtype, size,
                                                  (batch, mem["peak_delta_mib"] * 2**20), limit)
    except Exception as err:  # noqa: BLE001 - record OOM and other failures, keep going
        if not is_oom(err):
            traceback.print_exc()
        rec["error"] = "out of memory" if is_oom(err) else short_error(err)
        log(f"  training {kind} {variant}: {rec['error'][:200]}")
    finally:
        model.zero_grad(set_to_none=True)
        if kind == "compiled":
            import torch._dynamo

            torch._dynamo.reset()
        runner.free()
    return rec


def _largest_batch(runner: Runner, net, kind: str, dtype: str, size: int, first: tuple[int, float],
                   limit: float) -> dict[str, Any]:
    """The largest batch whose training step of ``net`` fits in ``limit`` bytes, searched within a bracket.

    Peak memory is close to linear in the batch: a line through the two largest batches measured so
    far predicts the next batch to try (starting from ``first`` = (batch, peak bytes) and half that
    batch); a step that runs out of memory leaves no measurement, and the next try is the middle of
    the bracket. Stops when the bracket is within 2 % or at six tries (a compiled model compiles once
    more, with a dynamic batch, then reuses it)."""
    a = runner.args
    points: list[tuple[int, float]] = [first]
    lo, hi = (first[0], None) if first[1] <= limit else (0, first[0])
    out: dict[str, Any] = {"tried": []}

    def attempt(b: int) -> bool | None:
        need = a.compile_min_seconds if kind == "compiled" and len(out["tried"]) < 2 else a.min_section_seconds / 4
        if runner.deadline.left() < need:
            return None
        x = runner.inputs(b, size)
        step = runner.train_fn(net, x, dtype)
        try:
            peak = peak_memory(step, runner.device)["peak_delta_mib"] * 2**20
            points.append((b, peak))
            ok = peak <= limit  # on a GPU an overflow raises instead
            out["tried"].append({"batch": b, "fits": ok, "peak_delta_mib": peak / 2**20})
        except Exception as err:
            if not is_oom(err):
                raise
            ok = False
            out["tried"].append({"batch": b, "fits": False, "error": "out of memory"})
        finally:
            step.release()
            del step, x
            runner.free()
        log(f"    batch {b}: {'fits' if ok else 'does not fit'}")
        return ok

    half = max(1, first[0] // 2)
    if half < first[0] and attempt(half) is None:
        return out
    for _ in range(6):
        if hi is not None and hi - lo <= max(1, lo // 50):
            break
        (b1, p1), (b2, p2) = sorted(points)[-2:] if len(points) >= 2 else (points[0], points[0])
        slope = (p2 - p1) / (b2 - b1) if b2 != b1 else 0.0
        guess = int((limit * 0.98 - (p2 - slope * b2)) // slope) if slope > 0 else 2 * max(lo, 1)
        if "predicted" not in out:
            out["predicted"] = guess
        if hi is None:  # no upper end yet: the prediction, at most 8x the largest batch that ran
            b = min(max(guess, lo + 1), 8 * max(lo, 1))
        elif lo < guess < hi and "error" not in out["tried"][-1]:
            b = guess
        else:  # a prediction outside the bracket, or an overflow that measured nothing: bisect
            b = (lo + hi) // 2
        if b <= lo:
            break
        ok = attempt(b)
        if ok is None:
            break
        lo, hi = (b, hi) if ok else (lo, b)
    out["fits"] = lo or None
    out["fails"] = hi
    return out
