"""Section ``syncs``: host-device synchronisations and ops launched by Base and Full.

One inference and one training step of each at the main setting: the sync-prone ATen ops with the
line that called them (any device), on CUDA the synchronisations ``torch.cuda.set_sync_debug_mode``
reports (see ``benchmarks/_syncs.py``), and the ops that launch device work (kernel launches in eager
mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks._common import log
from benchmarks._syncs import count_launches, count_sync_prone, cuda_syncs

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    a = runner.args
    dtype, batch, size = a.dtype[0], a.main_batch, a.main_size
    records = []
    for v in [v for v in ("Base", "Full") if v in a.variants]:
        model = runner.model(v)
        x = runner.inputs(batch, size)
        for mode in ("infer", "train"):
            fn = runner.infer_fn(model, x, dtype) if mode == "infer" else runner.train_fn(model, x, dtype)
            # the probe sees forward, loss and backward only: the optimizer's step counters are host
            # tensors (no sync on a GPU) that a CPU run cannot tell from device tensors
            probed = fn if mode == "infer" else runner.train_fn(model, x, dtype, optimizer=False)
            fn()  # warm-up: lazy initialisation (cuDNN autotuning, optimizer state) is not the steady state
            rec: dict[str, Any] = {"variant": v, "mode": mode, "dtype": dtype, "batch": batch,
                                   "image_size": size, "sync_prone_ops": count_sync_prone(probed),
                                   "launches": count_launches(probed, top=12)}
            if runner.device.type == "cuda":
                rec["cuda_syncs"] = cuda_syncs(fn)  # the whole step, optimizer included
            if hasattr(fn, "release"):
                fn.release()
            records.append(rec)
            found = sum(h["count"] for h in rec["sync_prone_ops"])
            real = sum(h["count"] for h in rec.get("cuda_syncs", [])) if "cuda_syncs" in rec else "n/a"
            log(f"  {v} {mode}: {found} sync-prone op(s) "
                f"{[h['where'] for h in rec['sync_prone_ops']]}, CUDA syncs: {real}, "
                f"{rec['launches']['total']} ops launched")
        del x
        runner.free()
    return {"records": records}
