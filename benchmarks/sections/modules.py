"""Section ``modules``: RUS, UGF, UDLR and OnlineErrorLoss alone, forward and forward + backward.

At the shapes the preset's model gives them for every ``--image-sizes`` and every ``--dtype`` (for the
``paper`` preset at 480: RUS on 15x15 with 20 tokens and C = 256; UGF in one call over 60x60 / 30x30 /
15x15; UDLR at 120x120 with a 256-channel F; OnlineErrorLoss at 480x480), batch ``--module-batch``:
latency (the four timed interleaved), FLOPs by op, parameters, memory; then the exponents of cost vs
pixel count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from benchmarks._common import MODULES, REAL_TOKENS, autocast, build_config, fit_exponent, log
from benchmarks._flops import count_flops
from benchmarks._measure import peak_memory, time_interleaved

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    from uncertainty_rrsis import (
        OnlineErrorLoss,
        ReferringUncertaintyScorer,
        UncertaintyDrivenRefinement,
        UncertaintyGatedFusion,
    )

    a = runner.args
    cfg = build_config(a.preset, "Full")
    dim, tokens = cfg.dim, cfg.text.max_tokens
    torch.manual_seed(0)
    mods = {
        "RUS": ReferringUncertaintyScorer(dim),
        "UGF": UncertaintyGatedFusion(dim, num_heads=cfg.fusion_heads),
        "UDLR": UncertaintyDrivenRefinement(dim, hidden_dim=cfg.refine_hidden_dim),
        "OnlineErrorLoss": OnlineErrorLoss(),
    }
    for m in mods.values():
        m.to(runner.device).train()
    batch = a.module_batch
    records: list[dict[str, Any]] = []
    for dtype in a.dtype:
        for size in a.image_sizes:
            if runner.deadline.left() < a.min_section_seconds / 2:
                runner.skip(f"modules {dtype} {size}")
                continue
            records += _modules_at(runner, mods, dim, tokens, batch, dtype, size)
            runner.free()
    fits = []
    for dtype in a.dtype:
        for name in MODULES:
            for mode in ("fwd", "fwd+bwd"):
                pts = [r for r in records if r["module"] == name and r["mode"] == mode and r["dtype"] == dtype]
                if len(pts) >= 2:
                    fits.append({
                        "module": name, "mode": mode, "dtype": dtype,
                        "latency": fit_exponent([r["pixels"] for r in pts], [r["latency"]["median_ms"] for r in pts]),
                        "flops": fit_exponent([r["pixels"] for r in pts], [r["gflops_per_image"] for r in pts]),
                    })
    return {"records": records, "fits": fits}


def _modules_at(runner: Runner, mods: dict[str, Any], dim: int, tokens: int, batch: int, dtype: str,
                size: int) -> list[dict[str, Any]]:
    """Time, count and measure the four modules at the shapes of one image size."""
    a = runner.args
    device = runner.device
    records: list[dict[str, Any]] = []
    s4, s8, s16, s32 = size // 4, size // 8, size // 16, size // 32
    g = torch.Generator().manual_seed(size)

    def rand(*shape, grad=True):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(grad)

    pad = torch.zeros(batch, tokens, dtype=torch.bool)
    pad[:, REAL_TOKENS:] = True
    leaves = {  # inputs that receive gradients in the model
        "text": rand(batch, tokens, dim),
        "unc": rand(batch, 1, s32, s32),
        "levels": [rand(batch, dim, s, s) for s in (s8, s16, s32)],
        "feature": rand(batch, dim, s4, s4),
        "coarse": rand(batch, 1, s4, s4),
    }
    fixed = {
        "pad": pad.to(device),
        "seg": rand(batch, 1, size, size, grad=False),
        "target": (torch.rand(batch, size, size, generator=g) > 0.7).to(device),
    }
    with_grad = {**leaves, **fixed}
    no_grad = {**{k: [t.detach() for t in v] if isinstance(v, list) else v.detach()
                  for k, v in leaves.items()}, **fixed}
    calls: dict[str, Callable[[dict], list[torch.Tensor]]] = {  # as the model calls them
        "RUS": lambda i: [mods["RUS"](i["levels"][-1], i["text"], i["pad"])],
        "UGF": lambda i: list(mods["UGF"](i["levels"], i["text"], i["unc"], i["pad"])),  # one call, 3 levels
        "UDLR": lambda i: [mods["UDLR"](i["feature"], i["coarse"], i["unc"])],
        "OnlineErrorLoss": lambda i: [mods["OnlineErrorLoss"](i["unc"], i["seg"], i["target"])],
    }
    shapes = {
        "RUS": f"V {s32}x{s32}x{dim}, T {tokens}x{dim}",
        "UGF": f"V {s8}x{s8} + {s16}x{s16} + {s32}x{s32} (x{dim}), T {tokens}, U {s32}x{s32}",
        "UDLR": f"F {dim}x{s4}x{s4}, P_fg {s4}x{s4}, U {s32}x{s32}",
        "OnlineErrorLoss": f"U {s32}x{s32} -> {size}x{size}",
    }

    def fwd(name):
        def call():
            with torch.no_grad(), autocast(device, dtype):
                return calls[name](no_grad)
        return call

    def fwd_bwd(name):
        def call():
            with autocast(device, dtype):
                outs = calls[name](with_grad)
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
            for t in (leaves["text"], leaves["unc"], *leaves["levels"], leaves["feature"],
                      leaves["coarse"]):
                t.grad = None
            for p in mods[name].parameters():
                p.grad = None
        return call

    for mode, maker in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        fns = {name: maker(name) for name in MODULES}
        timing = time_interleaved(fns, device, warmup=max(a.warmup, 2), repeats=a.module_repeats,
                                  max_seconds=a.max_seconds)
        for name in MODULES:
            flops = count_flops(fns[name])
            rec = {
                "module": name, "mode": mode, "dtype": dtype, "batch": batch, "image_size": size,
                "shapes": shapes[name], "pixels": size * size, "latency": timing[name],
                "throughput_img_s": batch / (timing[name]["median_ms"] / 1e3),
                "gflops_per_image": flops["total"] / batch / 1e9, "flops_by_op": flops["by_op"],
                "params": sum(p.numel() for p in mods[name].parameters()),
                "memory": peak_memory(fns[name], device, resident_bytes=runner.resident_bytes(mods[name])),
            }
            records.append(rec)
            lat = timing[name]
            log(f"  {name:>15} {mode:7} {dtype} b{batch} {size}px: {lat['median_ms']:.3f} ms "
                f"(p25-p75 {lat['p25_ms']:.3f}-{lat['p75_ms']:.3f}), "
                f"{rec['gflops_per_image']:.3f} GFLOPs/img")
    return records
