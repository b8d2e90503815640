"""Timing, memory and environment helpers of the benchmarks.

Timing: after ``warmup`` untimed calls, every call is timed on its own --

* CUDA: ``torch.cuda.synchronize()``, then a pair of CUDA events around the call, then a
  synchronize; the elapsed time between the events is the latency of that call (launch overhead
  included, no queueing across calls);
* CPU: ``torch.utils.benchmark.Timer(...).timeit(1)`` with the process's thread count (the Timer
  otherwise defaults to one thread).

Several callables can be timed **interleaved** (rounds in alternating order: A B C D, D C B A,
A B C D, ...), so a load change on a shared machine, or the position within a round, hits every
variant alike; ratios between them stay meaningful.

Memory:

* CUDA: ``torch.cuda.reset_peak_memory_stats()`` before one call, ``max_memory_allocated()`` after
  it (absolute peak, weights included) and the peak minus what was allocated before the call;
* CPU: a ``TorchDispatchMode`` that adds up the bytes of every tensor storage created during the
  call and subtracts them when the storage is freed (peak of live tensor bytes, the CPU analogue of
  the CUDA peak delta), and the peak resident-set increase of a second call (Linux: the ``VmHWM``
  mark reset through ``/proc/self/clear_refs``; allocator caching makes it a rough figure).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "bootstrap_median_ci",
    "queued_throughput",
    "environment",
    "load_average",
    "peak_memory",
    "summarize",
    "sync",
    "tensor_bytes",
    "time_interleaved",
    "time_once",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_s: list[float]) -> dict[str, float]:
    """median, IQR (p25, p75), p10/p90, mean, min, max in milliseconds, and the count."""
    xs = sorted(times_s)
    n = len(xs)

    def q(p: float) -> float:  # linear interpolation between order statistics
        if n == 1:
            return xs[0]
        pos = p * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    ms = 1e3
    return {
        "median_ms": statistics.median(xs) * ms,
        "p25_ms": q(0.25) * ms,
        "p75_ms": q(0.75) * ms,
        "iqr_ms": (q(0.75) - q(0.25)) * ms,
        "p10_ms": q(0.10) * ms,
        "p90_ms": q(0.90) * ms,
        "mean_ms": statistics.fmean(xs) * ms,
        "min_ms": xs[0] * ms,
        "max_ms": xs[-1] * ms,
        "n": n,
    }


def bootstrap_median_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``values`` (seeded, reproducible)."""
    xs = list(values)
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (float("nan"), float("nan"))
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(xs, dtype=torch.float64)
    idx = torch.randint(0, len(xs), (resamples, len(xs)), generator=g)
    medians = data[idx].median(dim=1).values.sort().values
    lo = medians[int((1 - level) / 2 * (resamples - 1))].item()
    hi = medians[int((1 + level) / 2 * (resamples - 1))].item()
    return lo, hi


def queued_throughput(fn: Callable[[], Any], device: torch.device, *, items_per_call: int, calls: int,
                      warmup: int = 2) -> dict[str, float]:
    """Steady-state throughput: ``calls`` calls queued back to back, one synchronisation at the end.

    Unlike ``items_per_call / latency`` (a synchronisation around every call), the device never
    waits for the host between calls here, which is how a serving loop runs.
    """
    for _ in range(max(warmup, 0)):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    seconds = time.perf_counter() - t0
    return {"items_per_s": items_per_call * calls / seconds, "calls": calls, "seconds": seconds}


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds taken by one call of ``fn``."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    # Timer.timeit(n) first runs max(n // 100, 2) untimed calls; the warm-up is done already, so time the
    # single call directly (the thread count is the current one, nothing to switch).
    timeit_once = getattr(timer, "_timeit", None)
    return float(timeit_once(1)) if timeit_once is not None else float(timer.timeit(1).times[0])


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    min_repeats: int = 3,
    max_seconds: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Time every callable of ``fns`` round robin; returns ``{name: summary + raw times}``.

    ``max_seconds`` caps the timed phase: the number of rounds is cut so that the estimated time
    (from the warm-up) stays under it, never below ``min_repeats``.
    """
    names = list(fns)
    warm_times = {name: [] for name in names}
    for _ in range(max(warmup, 0)):
        for name in names:
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            warm_times[name].append(time.perf_counter() - t0)
    rounds = repeats
    if max_seconds is not None and warmup > 0:
        per_round = sum(warm_times[n][-1] for n in names)
        if per_round > 0:
            rounds = max(min_repeats, min(repeats, int(max_seconds / per_round)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        # A B C D, then D C B A: whatever the position in a round does to a call (a cache left warm
        # or cold by the call before, a neighbour's load pattern) falls on every variant alike
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(time_once(fns[name], device))
        if log is not None and sum(times[n][-1] for n in names) > 5.0:  # slow rounds: show progress
            log(f"    round {i + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in names))
    return {name: {**summarize(times[name]), "times_ms": [t * 1e3 for t in times[name]]} for name in names}


class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created during the mode and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.current -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            key = storage.data_ptr()
            nbytes = storage.nbytes()
            if key == 0 or nbytes == 0 or key in self._seen:
                continue
            self._seen[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            try:
                weakref.finalize(storage, self._free, key)
            except TypeError:  # storage not weak-referenceable: count it as alive to the end
                pass
        return out


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in KiB, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the peak-RSS mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def tensor_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages of the tensors in ``tensors`` (any nesting)."""
    seen: dict[int, int] = {}
    for t in tree_flatten(tensors)[0]:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def peak_memory(fn: Callable[[], Any], device: torch.device, *, resident_bytes: int = 0) -> dict[str, Any]:
    """Peak memory of one call of ``fn`` (see the module docstring for what is measured).

    ``resident_bytes``: what the measured thing keeps allocated between calls (its weights, buffers
    and optimizer state). The result's ``peak_mib`` is ``resident + transient peak``: the peak of
    this model alone, even when other models share the device (their weights are not counted).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "method": "torch.cuda.max_memory_allocated - memory_allocated before + own weights/optimizer state",
            "peak_mib": (resident_bytes + peak - before) / 2**20,
            "peak_delta_mib": (peak - before) / 2**20,
            "resident_mib": resident_bytes / 2**20,
            "device_peak_mib": peak / 2**20,
            "allocated_before_mib": before / 2**20,
        }
    # CPU: live tensor bytes (deterministic) ...
    tracker = _LiveTensorBytes()
    with tracker:
        fn()
    tensor_peak = tracker.peak
    # ... and the peak resident-set increase of a second call (Linux: reset VmHWM through clear_refs).
    rss_delta = None
    before = _rss_kib("VmRSS")
    if before is not None and _reset_peak_rss():
        fn()
        peak = _rss_kib("VmHWM")
        rss_delta = None if peak is None else max(peak - before, 0) / 1024
    return {
        "method": "live tensor bytes created during the call (TorchDispatchMode) + own weights/optimizer state; "
                  "peak RSS increase (VmHWM)",
        "peak_mib": (resident_bytes + tensor_peak) / 2**20,
        "peak_delta_mib": tensor_peak / 2**20,
        "resident_mib": resident_bytes / 2**20,
        "rss_delta_mib": rss_delta,
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return getattr(mod, "__version__", None)


def git_commit() -> str | None:
    """The short commit of the measured tree; ``+dirty`` when the package or the benchmark code
    differs from it (results and Markdown files aside); None outside a git checkout."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        run = lambda *cmd: subprocess.run(  # noqa: E731
            ["git", *cmd], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        if not commit:
            return None
        changed = run("status", "--porcelain", "--", "../uncertainty_rrsis", ".", ":(exclude)results",
                      ":(exclude)*.md")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions and the numeric settings that change timings (no paths, no host name)."""
    env: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "einops": _version("einops"),
        "git_commit": git_commit(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            {
                "device_name": torch.cuda.get_device_name(device),
                "device_memory_gib": round(props.total_memory / 2**30, 1),
                "device_capability": f"{props.major}.{props.minor}",
                "cudnn": torch.backends.cudnn.version(),
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "driver": _nvidia_driver(),
            }
        )
    else:
        env["device_name"] = env["cpu"]
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
