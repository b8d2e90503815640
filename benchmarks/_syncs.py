"""Host-device synchronisations of one call: counted on any device, confirmed on CUDA.

On a GPU, eager PyTorch runs ahead of the device: the host queues kernels while earlier ones run.
An op that needs a value on the host (``.item()``, ``bool(tensor)``, a data-dependent output size)
or that copies host data to the device without ``non_blocking`` makes the host wait for everything
queued so far, and the overlap is lost. Three tools:

* :class:`SyncProneOps` (any device, CPU included): a ``TorchDispatchMode`` that records every ATen
  op which synchronises a CUDA stream when its tensors live on a GPU, with the Python line that
  called it. On a CPU run it finds the same places a CUDA run would (a tensor built from Python
  data with ``torch.tensor`` is a blocking host-to-device copy on CUDA, ``aten.lift_fresh`` here).
* :func:`count_launches` (any device): how many ATen ops of one call do work on the device (views,
  aliases and bare allocations excluded). In eager mode each is at least one kernel launch; when a
  GPU is launch-bound (small batches, small ops), time follows this count more than FLOPs.
* :func:`cuda_syncs` (CUDA only): ``torch.cuda.set_sync_debug_mode("warn")`` around the call,
  the warnings collected with their Python location: the synchronisations that really happened.
"""

from __future__ import annotations

import re
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SYNC_PRONE_OPS", "SyncProneOps", "count_launches", "count_sync_prone", "cuda_syncs"]

#: ATen ops that block the host on a CUDA tensor: reading a value (``_local_scalar_dense`` is
#: ``.item()`` / ``bool()`` / ``int()``), data-dependent output sizes, tensors made from host data.
SYNC_PRONE_OPS = frozenset({
    "_local_scalar_dense", "item", "equal", "nonzero", "nonzero_static", "masked_select", "unique_dim",
    "_unique", "_unique2", "unique_consecutive", "repeat_interleave", "lift_fresh",
})

_SKIP = re.compile(r"[/\\]torch[/\\]|[/\\]contextlib\.py$")


def _caller(limit: int = 40) -> str:
    """``path:line`` of the innermost frame outside torch itself (the code that issued the op)."""
    for frame in reversed(traceback.extract_stack(limit=limit)[:-2]):
        if frame.filename != __file__ and not _SKIP.search(frame.filename):
            return f"{_short_path(frame.filename)}:{frame.lineno}"
    return "?"


_REPO = Path(__file__).resolve().parents[1]


def _short_path(path: str) -> str:
    """A path without the machine's part: relative to the repository, or to site-packages."""
    resolved = Path(path).resolve()
    posix = resolved.as_posix()
    for anchor in ("site-packages/", "dist-packages/"):
        if anchor in posix:
            return posix.rsplit(anchor, 1)[1]
    if resolved.is_relative_to(_REPO):
        return resolved.relative_to(_REPO).as_posix()
    return resolved.name


class SyncProneOps(TorchDispatchMode):
    """Record the sync-prone ATen ops dispatched inside the mode: ``hits[(op, "file:line")] = count``."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_PRONE_OPS:
            self.hits[(name, _caller())] += 1
        return func(*args, **(kwargs or {}))

    def summary(self) -> list[dict[str, Any]]:
        return [{"op": op, "where": where, "count": n} for (op, where), n in sorted(self.hits.items())]


def count_sync_prone(fn: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run ``fn`` once under :class:`SyncProneOps`; the sync-prone ops it dispatched, with their callers."""
    with SyncProneOps() as probe:
        fn()
    return probe.summary()


#: ATen ops that allocate without running a kernel, or only change metadata.
_NO_KERNEL = frozenset({"empty", "empty_like", "empty_strided", "lift_fresh", "_local_scalar_dense", "is_same_size",
                        "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "resize_"})


def _is_view(func) -> bool:
    """A view (or alias) op: its output aliases an input and nothing is written."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


class _Launches(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in _NO_KERNEL and not _is_view(func):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count_launches(fn: Callable[[], Any], *, top: int = 0) -> dict[str, Any]:
    """Run ``fn`` once; the number of ATen ops that do device work (``total``), and the ``top`` most
    frequent as ``{"op": n}`` (``by_op``). Views, aliases, bare allocations and host reads are not counted;
    in-place ops are. On CUDA each counted op launches at least one kernel (a few launch more)."""
    with _Launches() as probe:
        fn()
    return {"total": sum(probe.ops.values()), "by_op": dict(probe.ops.most_common(top)) if top else {}}


def cuda_syncs(fn: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run ``fn`` once with ``torch.cuda.set_sync_debug_mode("warn")``; the synchronisations that happened.

    Returns ``[{"where": "file:line", "message": ..., "count": n}]`` (empty when there were none).
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_syncs needs a CUDA device")
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    counts: Counter[tuple[str, str]] = Counter()
    for w in caught:
        text = str(w.message)
        if "synchroniz" in text.lower():
            counts[(f"{_short_path(w.filename)}:{w.lineno}", text.splitlines()[0][:200])] += 1
    return [{"where": where, "message": msg, "count": n} for (where, msg), n in sorted(counts.items())]
