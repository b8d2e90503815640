"""What the CroBIM-U uncertainty modules cost: latency, throughput, memory, parameters, FLOPs.

Run from the repository root (the package is imported from source)::

    python -m benchmarks.latency --device cpu --preset paper --batch-sizes 1 --image-sizes 480
    python -m benchmarks.latency --device cuda --dtype bf16,fp32 --batch-sizes 8,1,32 \\
        --image-sizes 480,320,640,800 --channels-last --compile --time-budget 330

Sections (each writes ``<out>/<tag>_<section>.json`` as soon as it finishes, then rewrites the
run's ``<out>/<tag>.json`` and ``<out>/<tag>.md``):

``syncs``
    Host-device synchronisations of one inference and one training step of Base and Full: the
    ATen ops that block the host on a GPU, with the line that called them (any device), and on
    CUDA the synchronisations ``torch.cuda.set_sync_debug_mode`` reports (``benchmarks/_syncs.py``);
    and the ops that launch device work (kernel launches in eager mode), Full vs Base.
``modules``
    RUS, UGF (one call over the three levels it fuses), UDLR and OnlineErrorLoss alone, forward and
    forward + backward, at the shapes the preset's model gives them for every image size (for the
    ``paper`` preset at 480: RUS on 15x15 with 20 tokens and C = 256; UGF over 60x60 / 30x30 /
    15x15; UDLR at 120x120 with a 256-channel F; OnlineErrorLoss at 480x480), for every ``--dtype``.
``rows``
    The four ablation rows (Base, +UGF, +UDLR, Full) of the preset, random init, at the main
    setting (first dtype, ``--main-batch``, ``--main-size``): inference and one training step
    (forward, RiskGuidedLoss, backward, AdamW step).
``sweep``
    Base and Full inference over ``--image-sizes``; exponents of cost vs pixel count.
``batch``
    Base and Full at the other ``--batch-sizes``, inference and training step.
``channels_last``
    Base and Full at the main setting with ``channels_last`` model and input (``--channels-last``).
``compile``
    Full then Base at the main setting, inference, ``torch.compile`` vs eager: compile time, whether
    ``fullgraph=True`` works (else the graph breaks from ``torch._dynamo.explain``); then eager and
    compiled Full and Base timed in one interleaved table (``--compile``).

Latency: median and spread (p25-p75, p10-p90) over ``--repeats`` calls after ``--warmup``;
variants of one table are timed interleaved (see ``benchmarks/_measure.py``). FLOPs: see
``benchmarks/_flops.py`` (2 FLOPs per multiply-add). Parameters: ``CroBIMU.num_parameters()``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks._flops import FLOP_CONVENTION, count_flops
from benchmarks._measure import (
    environment,
    git_commit,
    load_average,
    peak_memory,
    queued_throughput,
    sync,
    tensor_bytes,
    time_interleaved,
    time_once,
)
from benchmarks._syncs import count_launches, count_sync_prone, cuda_syncs

__all__ = ["SECTIONS", "VARIANTS", "main", "parse_args"]

VARIANTS: dict[str, tuple[bool, bool]] = {  # name -> (use_fusion, use_refinement)
    "Base": (False, False),
    "+UGF": (True, False),
    "+UDLR": (False, True),
    "Full": (True, True),
}
SECTIONS = ("syncs", "modules", "rows", "sweep", "batch", "channels_last", "compile", "cudagraphs", "training",
            "decoders")
MODULES = ("RUS", "UGF", "UDLR", "OnlineErrorLoss")
MODULE_PATHS = {  # FlopCounterMode names of the parts of CroBIMU
    "vision": "CroBIMU.vision",
    "text": "CroBIMU.text",
    "decoder": "CroBIMU.decoder.decoder",
    "wrapper": "CroBIMU.decoder",
    "rus": "CroBIMU.decoder.scorer",
    "ugf": "CroBIMU.decoder.fusion",
}
# UDLR runs through RiskGuidedDecoder calling `refinement.refine(...)` (no module hooks fire), so its FLOPs
# are the wrapper's minus the decoder's, RUS's and UGF's (the wrapper does no other counted work).
TEXT_LAYOUTS = {  # random-init text encoders with the presets' layouts: nothing is downloaded
    "paper": {"model_type": "bert"},  # bert-base
    "tiny": {  # all-MiniLM-L6-v2
        "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536,
    },
}
REAL_TOKENS = 12  # of the 20 token slots, the rest is padding


def _now() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def log(msg: str) -> None:
    print(f"[{_now()}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- configs


def build_config(preset: str, variant: str):
    """The preset's config for one ablation row, with random-init encoders (no files, no network)."""
    from uncertainty_rrsis.models import (
        CroBIMUConfig,
        DecoderConfig,
        TextConfig,
        VisionConfig,
        get_preset,
    )

    use_fusion, use_refinement = VARIANTS[variant]
    if preset == "micro":  # benchmark-only: the smallest model, for the smoke test
        return CroBIMUConfig(
            vision=VisionConfig(name="convnext_atto", model_kwargs={"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}),
            text=TextConfig(
                name="micro-bert", pretrained=False,
                hf_config={"model_type": "bert", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32},
            ),
            decoder=DecoderConfig(num_layers=1, num_heads=4, num_points=2, ffn_dim=64, num_mask_layers=1),
            dim=32, image_size=64, fusion_heads=4, refine_hidden_dim=16,
            use_fusion=use_fusion, use_refinement=use_refinement,
        )
    return get_preset(
        preset,
        vision={"weights": None},
        text={"pretrained": False, "hf_config": TEXT_LAYOUTS.get(preset, {"model_type": "bert"})},
        use_fusion=use_fusion,
        use_refinement=use_refinement,
    )


# ------------------------------------------------------------------------------------------- helpers


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
    """Least-squares slope of log(y) vs log(x) (cost ~ x^slope) and its r^2; None below 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    slope = sxy / sxx
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    ss_res = sum((p[1] - (my + slope * (p[0] - mx))) ** 2 for p in pts)
    return {"exponent": slope, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, "points": len(pts)}


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


_ROOT = str(Path(__file__).resolve().parents[1])


def _sanitize(text: str) -> str:
    """No machine paths in the results: the repository root becomes ``.``, site-packages ``<site-packages>``."""
    text = text.replace(_ROOT + os.sep, "").replace(_ROOT, ".")
    return __import__("re").sub(r"[^\s\"']*/site-packages/", "<site-packages>/", text)


def _short_error(err: BaseException, limit: int = 600) -> str:
    text = _sanitize(f"{type(err).__name__}: {err}")
    return text if len(text) <= limit else text[:limit] + " ..."


class Deadline:
    def __init__(self, budget_s: float | None) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()


# ------------------------------------------------------------------------------------------- runner


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.deadline = Deadline(args.time_budget)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, Any] = {}
        self.flop_cache: dict[tuple, dict[str, Any]] = {}
        self.run: dict[str, Any] = {
            "tag": args.tag,
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": _sanitize("python -m benchmarks.latency " + " ".join(
                args.out_display if a == args.out else a for a in args.argv)),
            "environment": environment(self.device),
            "settings": self.settings(),
            "flop_convention": FLOP_CONVENTION,
            "load_average_start": load_average(),
            "sections": {},
            "skipped": [],
        }
        previous = self.out / f"{args.tag}.json"
        if args.append and previous.is_file():
            old = json.loads(previous.read_text(encoding="utf-8"))
            self.run["sections"] = old.get("sections", {})
            self.run["skipped"] = old.get("skipped", [])
            self.run["earlier_commands"] = old.get("earlier_commands", []) + [
                {"command": old.get("command"), "started": old.get("started"),
                 "load_average_start": old.get("load_average_start"), "load_average_end": old.get("load_average_end"),
                 "settings": old.get("settings")}]

    # -- bookkeeping ------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {
            "preset": a.preset,
            "device": a.device,
            "dtypes": a.dtype,
            "main_dtype": a.dtype[0],
            "batch_sizes": a.batch_sizes,
            "main_batch": a.main_batch,
            "image_sizes": a.image_sizes,
            "main_size": a.main_size,
            "module_batch": a.module_batch,
            "variants": a.variants,
            "train_variants": a.train_variants,
            "warmup": a.warmup,
            "repeats": a.repeats,
            "min_repeats": a.min_repeats,
            "train_repeats": a.train_repeats,
            "module_repeats": a.module_repeats,
            "max_seconds_per_measurement": a.max_seconds,
            "sections": a.sections,
            "compile_backend": a.compile_backend,
            "compile_mode": a.compile_mode,
            "compile_batch": a.compile_batch,
            "memory_limit_gib": a.memory_limit_gib,
            "text_tokens": f"{REAL_TOKENS} real of {self.max_tokens()} (rest padding)",
            "time_budget_s": a.time_budget,
            "quick": a.quick,
            "optimizer": "AdamW (torch default implementation), lr 1e-6, set_to_none=True",
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "timing": "CUDA events around each call with synchronize" if a.device.startswith("cuda")
            else "torch.utils.benchmark.Timer, one call per measurement",
        }

    def max_tokens(self) -> int:
        return int(build_config(self.args.preset, "Base").text.max_tokens)

    def write(self, section: str, payload: dict[str, Any]) -> None:
        """Add a finished section (stamped with the commit it measured) and rewrite ``<tag>.json`` /
        ``<tag>.md`` atomically, so that a run cut short keeps every section that finished."""
        from benchmarks._report import render_markdown, write_result

        payload = {**payload, "git_commit": git_commit(), "finished": _now(), "load_average_end": load_average()}
        self.run["sections"][section] = payload
        self.run["load_average_end"] = load_average()
        self.run["elapsed_s"] = round(self.deadline.elapsed(), 1)
        write_result(self.out, self.args.tag, self.run, render_markdown(self.run))
        log(f"section {section!r} written to {self.args.tag}.json; {self.deadline.elapsed():.0f} s elapsed")

    # -- models -----------------------------------------------------------------------------

    def model(self, variant: str):
        if variant not in self.models:
            from uncertainty_rrsis.models import CroBIMU

            t0 = time.perf_counter()
            torch.manual_seed(0)
            model = CroBIMU(build_config(self.args.preset, variant)).to(self.device).eval()
            self.models[variant] = model
            log(f"built {variant} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) "
                f"in {time.perf_counter() - t0:.1f} s")
        return self.models[variant]

    def inputs(self, batch: int, size: int, *, channels_last: bool = False) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(batch * 1000 + size)
        model = next(iter(self.models.values()))
        vocab = int(model.text.backbone.config.vocab_size)
        tokens = self.max_tokens()
        images = torch.randn(batch, 3, size, size, generator=g)
        ids = torch.randint(min(1000, vocab // 2), vocab, (batch, tokens), generator=g)
        mask = torch.zeros(batch, tokens, dtype=torch.long)
        mask[:, : min(REAL_TOKENS, tokens)] = 1
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        target = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2).expand(batch, size, size)
        images = images.to(self.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return {
            "images": images,
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "target": target.contiguous().to(self.device),
        }

    def infer_fn(self, model, x: dict[str, torch.Tensor], dtype: str) -> Callable[[], Any]:
        device = self.device

        def infer():
            model.eval()
            with torch.no_grad(), autocast(device, dtype):
                return model(x["images"], x["input_ids"], x["attention_mask"])

        return infer

    def train_fn(self, model, x: dict[str, torch.Tensor], dtype: str, *, optimizer: bool = True):
        from uncertainty_rrsis import RiskGuidedLoss

        device = self.device
        loss_fn = RiskGuidedLoss()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6) if optimizer else None

        def step():
            model.train()
            with autocast(device, dtype):
                out = model(x["images"], x["input_ids"], x["attention_mask"])
                loss = loss_fn(out, x["target"]).total
            loss.backward()
            if opt is not None:
                opt.step()
            model.zero_grad(set_to_none=True)
            return loss

        def release():
            model.zero_grad(set_to_none=True)
            if opt is not None:
                opt.state.clear()

        step.release = release  # type: ignore[attr-defined]
        step.resident = lambda: self.resident_bytes(model) + (  # type: ignore[attr-defined]
            tensor_bytes([dict(st) for st in opt.state.values()]) if opt is not None else 0)
        return step

    @staticmethod
    def resident_bytes(model) -> int:
        return tensor_bytes([*model.parameters(), *model.buffers()])

    def model_flops(self, variant: str, size: int, mode: str) -> dict[str, Any]:
        """FLOPs per image (counted at batch 1, fp32, math SDPA)."""
        key = (variant, size, mode)
        if key not in self.flop_cache:
            model = self.model(variant)
            x = self.inputs(1, size)
            fn = self.infer_fn(model, x, "fp32") if mode == "infer" else self.train_fn(model, x, "fp32",
                                                                                        optimizer=False)
            counted = count_flops(fn, prefixes=MODULE_PATHS)
            by = counted["by_module"]
            by["udlr"] = by.pop("wrapper") - by["decoder"] - by["rus"] - by["ugf"]
            self.flop_cache[key] = counted
            model.zero_grad(set_to_none=True)
        return self.flop_cache[key]

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- measuring a table of whole-model variants -------------------------------------------------

    def measure_models(
        self,
        variants: Sequence[str],
        *,
        mode: str,
        dtype: str,
        batch: int,
        size: int,
        channels_last: bool = False,
        flops: bool = True,
        memory: bool = True,
    ) -> list[dict[str, Any]]:
        """Time (interleaved), memory and FLOPs of ``variants`` in one setting."""
        a = self.args
        records: list[dict[str, Any]] = []
        fns: dict[str, Callable[[], Any]] = {}
        for v in variants:
            model = self.model(v)
        x = self.inputs(batch, size, channels_last=channels_last)
        for v in variants:
            model = self.model(v)
            if channels_last:
                model.to(memory_format=torch.channels_last)
            fns[v] = self.infer_fn(model, x, dtype) if mode == "infer" else self.train_fn(model, x, dtype)
        base = {"mode": mode, "dtype": dtype, "batch": batch, "image_size": size, "channels_last": channels_last}
        try:
            repeats = a.repeats if mode == "infer" else a.train_repeats
            timing = time_interleaved(fns, self.device, warmup=a.warmup, repeats=repeats, max_seconds=a.max_seconds,
                                      min_repeats=min(a.min_repeats, repeats), log=log)
            for v in variants:
                rec = {"variant": v, **base, "latency": timing[v],
                       "throughput_img_s": batch / (timing[v]["median_ms"] / 1e3)}
                rec["params"] = self.model(v).num_parameters()
                t0 = time.perf_counter()
                if memory:
                    own = getattr(fns[v], "resident", None)  # training: weights + optimizer state
                    resident = own() if own is not None else self.resident_bytes(self.model(v))
                    rec["memory"] = peak_memory(fns[v], self.device, resident_bytes=resident)
                t1 = time.perf_counter()
                if flops:
                    rec["flops"] = self.model_flops(v, size, mode)
                    rec["gflops_per_image"] = rec["flops"]["total"] / 1e9
                if time.perf_counter() - t0 > 5.0:
                    log(f"    {v}: memory {t1 - t0:.1f} s, FLOPs {time.perf_counter() - t1:.1f} s")
                records.append(rec)
        except Exception as err:  # noqa: BLE001 - record OOM and other failures, keep going
            if not _is_oom(err):
                traceback.print_exc()
            log(f"  {mode} {dtype} batch {batch} size {size}: {_short_error(err, 200)}")
            records = [{"variant": v, **base, "error": "out of memory" if _is_oom(err) else _short_error(err)}
                       for v in variants]
        finally:
            for v in variants:
                release = getattr(fns.get(v), "release", None)
                if release is not None:
                    release()
                if channels_last:
                    self.model(v).to(memory_format=torch.contiguous_format)
            del fns, x
            self.free()
        for rec in records:
            if "latency" in rec:
                lat = rec["latency"]
                mem = rec.get("memory", {})
                mem_txt = f", peak {mem['peak_mib']:.0f} MiB" if mem.get("peak_mib") else (
                    f", peak tensors {mem['peak_delta_mib']:.0f} MiB" if mem.get("peak_delta_mib") else "")
                log(f"  {rec['variant']:>6} {mode:5} {dtype} b{batch} {size}px"
                    f"{' CL' if channels_last else ''}: {lat['median_ms']:.2f} ms "
                    f"(p25-p75 {lat['p25_ms']:.2f}-{lat['p75_ms']:.2f}, n={lat['n']}){mem_txt}")
        return records

    # -- sections ---------------------------------------------------------------------------------

    def section_modules(self) -> dict[str, Any]:
        from uncertainty_rrsis import (
            OnlineErrorLoss,
            ReferringUncertaintyScorer,
            UncertaintyDrivenRefinement,
            UncertaintyGatedFusion,
        )

        a = self.args
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
            m.to(self.device).train()
        batch = a.module_batch
        records: list[dict[str, Any]] = []
        for dtype in a.dtype:
            for size in a.image_sizes:
                if self.deadline.left() < a.min_section_seconds / 2:
                    self.run["skipped"].append(f"modules {dtype} {size}")
                    continue
                records += self._modules_at(mods, dim, tokens, batch, dtype, size)
                self.free()
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

    def _modules_at(self, mods: dict[str, Any], dim: int, tokens: int, batch: int, dtype: str,
                    size: int) -> list[dict[str, Any]]:
        """Time, count and measure the four modules at the shapes of one image size."""
        a = self.args
        records: list[dict[str, Any]] = []
        s4, s8, s16, s32 = size // 4, size // 8, size // 16, size // 32
        g = torch.Generator().manual_seed(size)

        def rand(*shape, grad=True):
            return torch.randn(*shape, generator=g).to(self.device).requires_grad_(grad)

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
            "pad": pad.to(self.device),
            "seg": rand(batch, 1, size, size, grad=False),
            "target": (torch.rand(batch, size, size, generator=g) > 0.7).to(self.device),
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
            def run():
                with torch.no_grad(), autocast(self.device, dtype):
                    return calls[name](no_grad)
            return run

        def fwd_bwd(name):
            def run():
                with autocast(self.device, dtype):
                    outs = calls[name](with_grad)
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
                for t in (leaves["text"], leaves["unc"], *leaves["levels"], leaves["feature"],
                          leaves["coarse"]):
                    t.grad = None
                for p in mods[name].parameters():
                    p.grad = None
            return run

        for mode, maker in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            fns = {name: maker(name) for name in MODULES}
            timing = time_interleaved(fns, self.device, warmup=max(a.warmup, 2), repeats=a.module_repeats,
                                      max_seconds=a.max_seconds)
            for name in MODULES:
                flops = count_flops(fns[name])
                rec = {
                    "module": name, "mode": mode, "dtype": dtype, "batch": batch, "image_size": size,
                    "shapes": shapes[name], "pixels": size * size, "latency": timing[name],
                    "throughput_img_s": batch / (timing[name]["median_ms"] / 1e3),
                    "gflops_per_image": flops["total"] / batch / 1e9, "flops_by_op": flops["by_op"],
                    "params": sum(p.numel() for p in mods[name].parameters()),
                    "memory": peak_memory(fns[name], self.device,
                                          resident_bytes=self.resident_bytes(mods[name])),
                }
                records.append(rec)
                lat = timing[name]
                log(f"  {name:>15} {mode:7} {dtype} b{batch} {size}px: {lat['median_ms']:.3f} ms "
                    f"(p25-p75 {lat['p25_ms']:.3f}-{lat['p75_ms']:.3f}), "
                    f"{rec['gflops_per_image']:.3f} GFLOPs/img")
        return records

    def section_rows(self) -> dict[str, Any]:
        a = self.args
        dtype, batch, size = a.dtype[0], a.main_batch, a.main_size
        records = self.measure_models(a.variants, mode="infer", dtype=dtype, batch=batch, size=size)
        if self.deadline.left() > a.min_section_seconds / 2:
            records += self.measure_models(a.train_variants, mode="train", dtype=dtype, batch=batch, size=size)
        else:
            self.run["skipped"].append("rows train")
        return {"records": records}

    def section_sweep(self) -> dict[str, Any]:
        a = self.args
        dtype, batch = a.dtype[0], a.main_batch
        pair = [v for v in ("Base", "Full") if v in a.variants]
        records = []
        for size in a.image_sizes:
            if size == a.main_size and "rows" in self.run["sections"]:
                records += [dict(r, reused_from="rows") for r in self.run["sections"]["rows"]["records"]
                            if r["variant"] in pair and r["mode"] == "infer" and "latency" in r]
                continue
            if self.deadline.left() < a.min_section_seconds / 2:
                self.run["skipped"].append(f"sweep {size}")
                continue
            records += self.measure_models(pair, mode="infer", dtype=dtype, batch=batch, size=size, memory=True)
        fits = []
        for v in pair:
            pts = sorted((r for r in records if r["variant"] == v and "latency" in r), key=lambda r: r["image_size"])
            px = [r["image_size"] ** 2 for r in pts]
            fits.append({"variant": v,
                         "latency": fit_exponent(px, [r["latency"]["median_ms"] for r in pts]),
                         "flops": fit_exponent(px, [r["gflops_per_image"] for r in pts])})
        return {"records": records, "fits": fits}

    def section_batch(self) -> dict[str, Any]:
        a = self.args
        pair = [v for v in ("Base", "Full") if v in a.variants]
        records = []
        for batch in a.batch_sizes:
            if batch == a.main_batch:
                continue
            for mode in ("infer", "train"):
                if self.deadline.left() < a.min_section_seconds / 2:
                    self.run["skipped"].append(f"batch {batch} {mode}")
                    continue
                variants = pair if mode == "infer" else [v for v in pair if v in a.train_variants]
                measured = self.measure_models(variants, mode=mode, dtype=a.dtype[0], batch=batch,
                                               size=a.main_size, flops=False)
                if mode == "infer":
                    self.add_queued_throughput(measured, batch)
                records += measured
        return {"records": records}

    def queued_calls(self, median_ms: float) -> int:
        """Calls for one steady-state measurement: ``--queued-calls``, fewer when that would take longer
        than ``--queued-seconds`` at the measured latency (at least 3)."""
        a = self.args
        return max(3, min(a.queued_calls, int(a.queued_seconds * 1e3 / max(median_ms, 1e-3))))

    def add_queued_throughput(self, records: list[dict[str, Any]], batch: int) -> None:
        """Steady-state images/s of the inference records: calls queued back to back, one sync at the end."""
        a = self.args
        x = self.inputs(batch, a.main_size)
        for rec in records:
            if "error" in rec:
                continue
            fn = self.infer_fn(self.model(rec["variant"]).eval(), x, rec["dtype"])
            calls = self.queued_calls(rec["latency"]["median_ms"])
            try:
                rec["throughput_queued"] = queued_throughput(fn, self.device, items_per_call=batch, calls=calls,
                                                             warmup=2)
                log(f"  {rec['variant']} batch {batch}: {rec['throughput_queued']['items_per_s']:.1f} images/s queued "
                    f"({calls} calls)")
            except Exception as err:  # noqa: BLE001 - record OOM and other failures, keep going
                rec["throughput_queued"] = {"error": _short_error(err, 200)}
        del x
        self.free()

    def section_channels_last(self) -> dict[str, Any]:
        a = self.args
        pair = [v for v in ("Base", "Full") if v in a.variants]
        records = []
        for mode in ("infer", "train"):
            if self.deadline.left() < a.min_section_seconds / 2:
                self.run["skipped"].append(f"channels_last {mode}")
                continue
            variants = pair if mode == "infer" else [v for v in pair if v in a.train_variants]
            records += self.measure_models(variants, mode=mode, dtype=a.dtype[0], batch=a.main_batch,
                                           size=a.main_size, channels_last=True, flops=False)
        return {"records": records}

    def section_syncs(self) -> dict[str, Any]:
        """Host-device synchronisations of one inference and one training step of Base and Full: the
        sync-prone ATen ops with their callers (any device), and on CUDA the synchronisations that
        ``torch.cuda.set_sync_debug_mode`` reports; and the number of ops that launch device work."""
        a = self.args
        dtype, batch, size = a.dtype[0], a.main_batch, a.main_size
        records = []
        for v in [v for v in ("Base", "Full") if v in a.variants]:
            model = self.model(v)
            x = self.inputs(batch, size)
            for mode in ("infer", "train"):
                fn = self.infer_fn(model, x, dtype) if mode == "infer" else self.train_fn(model, x, dtype)
                # the probe sees forward, loss and backward only: the optimizer's step counters are host
                # tensors (no sync on a GPU) that a CPU run cannot tell from device tensors
                probed = fn if mode == "infer" else self.train_fn(model, x, dtype, optimizer=False)
                fn()  # warm-up: lazy initialisation (cuDNN autotuning, optimizer state) is not the steady state
                rec: dict[str, Any] = {"variant": v, "mode": mode, "dtype": dtype, "batch": batch,
                                       "image_size": size, "sync_prone_ops": count_sync_prone(probed),
                                       "launches": count_launches(probed, top=12)}
                if self.device.type == "cuda":
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
            self.free()
        return {"records": records}

    def section_compile(self) -> dict[str, Any]:
        """For every ``--compile-mode`` (e.g. default and ``reduce-overhead``, which captures CUDA
        graphs): compile Full, then Base (``fullgraph=True``; a graph break is explained and the model
        compiled without it), then time eager and compiled Full and Base in one interleaved table, so
        that the compiled Full/Base ratio comes with a paired spread."""
        records: list[dict[str, Any]] = []
        for mode in self.args.compile_mode:
            records += self._compile_one_mode(None if mode == "default" else mode)
            self.write("compile", {"records": records, "timed_together": True, "partial": True})
        return {"records": records, "timed_together": True}

    def section_cudagraphs(self) -> dict[str, Any]:
        """The compile section in ``mode="reduce-overhead"`` (inductor with CUDA graphs: the whole
        inference replayed as one graph, possible only without host synchronisations)."""
        return {"records": self._compile_one_mode("reduce-overhead"), "timed_together": True}

    def _compile_one_mode(self, compile_mode: str | None) -> list[dict[str, Any]]:
        import torch._dynamo

        a = self.args
        dtype, batch, size = a.dtype[0], a.compile_batch, a.main_size
        x: dict[str, torch.Tensor] = {}
        records: list[dict[str, Any]] = []
        fns: dict[str, Callable[[], Any]] = {}
        for v in [v for v in ("Full", "Base") if v in a.variants]:
            if self.deadline.left() < a.compile_min_seconds:
                log(f"  compile {v}: skipped, {self.deadline.left():.0f} s left < {a.compile_min_seconds} s")
                self.run["skipped"].append(f"compile {v}")
                continue
            model = self.model(v).eval()
            x = x or self.inputs(batch, size)  # the same inputs for every variant
            rec: dict[str, Any] = {"variant": v, "mode": "infer", "dtype": dtype, "batch": batch, "image_size": size,
                                   "backend": a.compile_backend, "compile_mode": compile_mode or "default"}
            try:
                compiled_model = torch.compile(model, fullgraph=True, dynamic=False, backend=a.compile_backend,
                                               mode=compile_mode)
                compiled = self.infer_fn(compiled_model, x, dtype)
                t0 = time.perf_counter()
                try:
                    compiled()
                    sync(self.device)
                    rec["fullgraph"] = True
                    rec["graph_breaks"] = 0
                except Exception as err:  # noqa: BLE001 - a graph break under fullgraph=True
                    rec["fullgraph"] = False
                    rec["fullgraph_error"] = _short_error(err, 1500)
                    log(f"  compile {v}: fullgraph=True failed: {_short_error(err, 300)}")
                    with torch.no_grad(), autocast(self.device, dtype):
                        explained = torch._dynamo.explain(model)(x["images"], x["input_ids"], x["attention_mask"])
                    rec["graph_breaks"] = int(explained.graph_break_count)
                    rec["graph_count"] = int(explained.graph_count)
                    rec["break_reasons"] = [_sanitize(str(getattr(r, "reason", r)))[:400]
                                            for r in explained.break_reasons[:10]]
                    compiled_model = torch.compile(model, fullgraph=False, dynamic=False,
                                                   backend=a.compile_backend, mode=compile_mode)
                    compiled = self.infer_fn(compiled_model, x, dtype)
                    t0 = time.perf_counter()
                    compiled()
                    sync(self.device)
                rec["compile_s"] = time.perf_counter() - t0  # first call: tracing + compilation + one run
                t1 = time.perf_counter()
                compiled()
                sync(self.device)
                rec["second_call_ms"] = (time.perf_counter() - t1) * 1e3
                log(f"  compile {v}: fullgraph={rec['fullgraph']} breaks={rec['graph_breaks']} "
                    f"compile {rec['compile_s']:.1f} s, second call {rec['second_call_ms']:.1f} ms")
                fns[f"{v} eager"] = self.infer_fn(model, x, dtype)
                fns[f"{v} compiled"] = compiled
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                rec["error"] = _short_error(err, 1500)
            records.append(rec)
        if fns:
            log(f"  timing {', '.join(fns)} interleaved")
            timing = time_interleaved(fns, self.device, warmup=a.warmup, repeats=a.repeats,
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
                    calls = self.queued_calls(rec[kind]["median_ms"])
                    try:
                        rec["throughput_queued"][kind] = queued_throughput(fns[f"{v} {kind}"], self.device,
                                                                           items_per_call=batch, calls=calls, warmup=2)
                    except Exception as err:  # noqa: BLE001 - keep the timing table
                        rec["throughput_queued"][kind] = {"error": _short_error(err, 200)}
                log(f"  {v} batch {batch} queued: " + ", ".join(
                    f"{k} {t['items_per_s']:.1f} images/s" for k, t in rec["throughput_queued"].items()
                    if "items_per_s" in t))
        del fns, x
        torch._dynamo.reset()
        self.free()
        return records

    def section_training(self) -> dict[str, Any]:
        """Training throughput and the largest batch that fits, eager then compiled (Full, then Base)."""
        a = self.args
        dtype, batch, size = a.dtype[0], a.compile_batch, a.main_size
        variants = [v for v in ("Full", "Base") if v in a.train_variants]
        records: list[dict[str, Any]] = []
        for kind in ("eager", "compiled"):
            for v in variants:
                need = a.compile_min_seconds if kind == "compiled" else a.min_section_seconds / 2
                if self.deadline.left() < need:
                    log(f"  training {kind} {v}: skipped, {self.deadline.left():.0f} s left < {need:.0f} s")
                    self.run["skipped"].append(f"training {kind} {v}")
                    continue
                records.append(self._training_one(v, kind, dtype, batch, size))
                self.free()
                self.write("training", {"records": records, "partial": True})  # a time-out keeps these
        limit = self.memory_limit()
        return {"records": records, "memory_limit_mib": limit / 2**20 if math.isfinite(limit) else None}

    def memory_limit(self) -> float:
        """Bytes one training step may use: ``--memory-limit-gib``, else on CUDA what is free now plus what
        the allocator holds in its cache (reusable), else infinite."""
        if self.args.memory_limit_gib:
            return self.args.memory_limit_gib * 2**30
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return float(free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device))
        return math.inf

    def _training_one(self, variant: str, kind: str, dtype: str, batch: int, size: int) -> dict[str, Any]:
        a = self.args
        model = self.model(variant)
        rec: dict[str, Any] = {"variant": variant, "kind": kind, "mode": "train", "dtype": dtype, "batch": batch,
                               "image_size": size}
        runner = model
        if kind == "compiled":
            import torch._dynamo

            torch._dynamo.reset()
            # static shapes for the throughput batch; the largest-batch search then compiles once more with
            # a dynamic batch (torch.compile's default) and reuses that graph for every other batch
            runner = torch.compile(model, backend=a.compile_backend)
        try:
            x = self.inputs(batch, size)
            step = self.train_fn(runner, x, dtype)
            t0 = time.perf_counter()
            step()
            sync(self.device)
            rec["first_step_s"] = time.perf_counter() - t0  # compiled: tracing + compilation + one step
            step()
            median_ms = min(time_once(step, self.device) for _ in range(2)) * 1e3
            calls = self.queued_calls(median_ms)
            rec["throughput_queued"] = queued_throughput(step, self.device, items_per_call=batch, calls=calls,
                                                         warmup=1)
            step.release()  # the memory measurement starts without gradients and optimizer state
            mem = peak_memory(step, self.device)
            rec["peak_delta_mib"] = mem["peak_delta_mib"]
            step.release()
            del step, x
            self.free()
            limit = self.memory_limit()
            log(f"  training {kind} {variant} batch {batch}: {rec['throughput_queued']['items_per_s']:.1f} images/s "
                f"queued, first step {rec['first_step_s']:.1f} s, peak {mem['peak_delta_mib']:.0f} MiB above the "
                f"weights")
            if math.isfinite(limit):
                rec["memory_limit_mib"] = limit / 2**20
                rec["largest_batch"] = self._largest_batch(runner, kind, dtype, size,
                                                           (batch, mem["peak_delta_mib"] * 2**20), limit)
        except Exception as err:  # noqa: BLE001 - record OOM and other failures, keep going
            if not _is_oom(err):
                traceback.print_exc()
            rec["error"] = "out of memory" if _is_oom(err) else _short_error(err)
            log(f"  training {kind} {variant}: {rec['error'][:200]}")
        finally:
            model.zero_grad(set_to_none=True)
            if kind == "compiled":
                import torch._dynamo

                torch._dynamo.reset()
            self.free()
        return rec

    def _largest_batch(self, runner, kind: str, dtype: str, size: int, first: tuple[int, float],
                       limit: float) -> dict[str, Any]:
        """The largest batch whose training step fits in ``limit`` bytes, searched within a bracket.

        Peak memory is close to linear in the batch: a line through the two largest batches measured so
        far predicts the next batch to try (starting from ``first`` = (batch, peak bytes) and half that
        batch); a step that runs out of memory leaves no measurement, and the next try is the middle of
        the bracket. Stops when the bracket is within 2 % or at six tries (a compiled model compiles once
        more, with a dynamic batch, then reuses it)."""
        a = self.args
        points: list[tuple[int, float]] = [first]
        lo, hi = (first[0], None) if first[1] <= limit else (0, first[0])
        out: dict[str, Any] = {"tried": []}

        def attempt(b: int) -> bool | None:
            need = a.compile_min_seconds if kind == "compiled" and len(out["tried"]) < 2 else a.min_section_seconds / 4
            if self.deadline.left() < need:
                return None
            x = self.inputs(b, size)
            step = self.train_fn(runner, x, dtype)
            try:
                peak = peak_memory(step, self.device)["peak_delta_mib"] * 2**20
                points.append((b, peak))
                ok = peak <= limit  # on a GPU an overflow raises instead
                out["tried"].append({"batch": b, "fits": ok, "peak_delta_mib": peak / 2**20})
            except Exception as err:
                if not _is_oom(err):
                    raise
                ok = False
                out["tried"].append({"batch": b, "fits": False, "error": "out of memory"})
            finally:
                step.release()
                del step, x
                self.free()
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

    def section_decoders(self) -> dict[str, Any]:
        """Base vs Full around a second decoder: LAVT's ``SimpleDecoding`` (the look-alike of
        ``examples/field_decoders.py``) wrapped with the ``lavt`` recipe at Swin-B widths (128, 256,
        512, 1024), BERT-base-wide text (768, 20 tokens), the main batch and size; inference and
        training step timed interleaved."""
        from benchmarks._examples import field_decoders
        from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss

        a = self.args
        widths, batch, size = (128, 256, 512, 1024), a.main_batch, a.main_size
        g = torch.Generator().manual_seed(0)
        features = [torch.randn(batch, c, size // st, size // st, generator=g).to(self.device)
                    for c, st in zip(widths, (4, 8, 16, 32))]
        text = torch.randn(batch, 20, 768, generator=g).to(self.device)
        pad = (torch.arange(20) >= REAL_TOKENS).expand(batch, 20).to(self.device)
        target = (torch.rand(batch, size, size, generator=g) > 0.7).to(self.device)
        models = {}
        for name, full in (("Base", False), ("Full", True)):
            torch.manual_seed(0)
            decoder = field_decoders().build_decoder("lavt", widths, 768)
            models[name] = RiskGuidedDecoder.from_recipe(
                "lavt", decoder, widths, text_dim=768, use_fusion=full, use_refinement=full).to(self.device)
        records = []
        for mode in ("infer", "train"):
            fns = {}
            for name, model in models.items():
                if mode == "infer":
                    def fn(model=model):
                        model.eval()
                        with torch.no_grad(), autocast(self.device, a.dtype[0]):
                            return model(features, text, pad)
                else:
                    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
                    loss_fn = RiskGuidedLoss()

                    def fn(model=model, opt=opt, loss_fn=loss_fn):
                        model.train()
                        with autocast(self.device, a.dtype[0]):
                            loss = loss_fn(model(features, text, pad), target).total
                        loss.backward()
                        opt.step()
                        model.zero_grad(set_to_none=True)
                fns[name] = fn
            repeats = a.repeats if mode == "infer" else a.train_repeats
            timing = time_interleaved(fns, self.device, warmup=a.warmup, repeats=repeats, max_seconds=a.max_seconds,
                                      min_repeats=min(a.min_repeats, repeats), log=log)
            for name in fns:
                params = sum(p.numel() for p in models[name].parameters())
                records.append({"variant": name, "decoder": "SimpleDecoding (LAVT-style)", "mode": mode,
                                "dtype": a.dtype[0], "batch": batch, "image_size": size, "latency": timing[name],
                                "params": {"total": params}})
            log(f"  SimpleDecoding {mode}: Base {timing['Base']['median_ms']:.2f} ms, Full "
                f"{timing['Full']['median_ms']:.2f} ms")
        del models, features, text, target
        self.free()
        return {"records": records}

    # -- driver -----------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        a = self.args
        log(f"device {self.run['environment']['device_name']}, torch {torch.__version__}, "
            f"sections {a.sections}, out {a.out_display}")
        for section in a.sections:
            left = self.deadline.left()
            if left < a.min_section_seconds:
                log(f"section {section!r} skipped: {left:.0f} s left < {a.min_section_seconds} s")
                self.run["skipped"].append(section)
                continue
            log(f"section {section!r} starts ({self.deadline.elapsed():.0f} s elapsed, load {load_average()})")
            t0 = time.perf_counter()
            payload = getattr(self, f"section_{section}")()
            payload["duration_s"] = round(time.perf_counter() - t0, 1)
            self.write(section, payload)
        log(f"done in {self.deadline.elapsed():.0f} s; results in {a.out_display}")
        return self.run


# ------------------------------------------------------------------------------------------- CLI


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Latency, throughput, memory, parameters and FLOPs of the CroBIM-U modules and model rows.",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:1, cpu")
    p.add_argument("--dtype", default=None, help="comma list of fp32, bf16 (bf16 = autocast); the first is the "
                                                 "main dtype of the model tables, modules run all "
                                                 "(default: bf16,fp32 on cuda, fp32 on cpu)")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="comma list (default: 1,8,32 on cuda, 1 on cpu)")
    p.add_argument("--main-batch", type=int, default=None, help="batch of the rows / sweep / compile tables "
                                                                "(default: 8 if listed, else the first)")
    p.add_argument("--module-batch", type=int, default=None, help="batch of the modules table (default: main)")
    p.add_argument("--image-sizes", type=_ints, default=None, help="comma list (default: 320,480,640,800 for the "
                                                                   "paper preset; multiples of 32)")
    p.add_argument("--main-size", type=int, default=None, help="image size of the rows tables (default: the "
                                                               "preset's image_size, 480 for paper)")
    p.add_argument("--preset", default="paper", choices=["paper", "tiny", "micro"],
                   help="paper / tiny (random init, layouts of the presets) or micro (benchmark-only, smoke test)")
    p.add_argument("--variants", type=_names, default=list(VARIANTS), help="ablation rows (Base,+UGF,+UDLR,Full)")
    p.add_argument("--train-variants", type=_names, default=None,
                   help="rows that also get a training step (default: all on cuda, Base,Full on cpu)")
    p.add_argument("--sections", type=_names, default=None,
                   help=f"any of {','.join(SECTIONS)} (default: modules,rows,sweep,batch + the flags below)")
    p.add_argument("--compile", action="store_true", help="add the torch.compile section")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: graph-break check only)")
    p.add_argument("--compile-mode", type=_names, default=["default"],
                   help="comma list of torch.compile modes, each timed (default, reduce-overhead, max-autotune)")
    p.add_argument("--compile-batch", type=int, default=None,
                   help="batch of the compile section and the training section (default: the largest of "
                        "--batch-sizes)")
    p.add_argument("--compile-min-seconds", type=float, default=90.0,
                   help="compile a variant only when this much time budget is left")
    p.add_argument("--channels-last", action="store_true", help="add the channels_last section")
    p.add_argument("--memory-limit-gib", type=float, default=None,
                   help="memory one training step may use, for the largest-batch search (default: on CUDA the "
                        "free device memory; on CPU no search unless given)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 cuda, 1 cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 30 cuda, 10 cpu)")
    p.add_argument("--module-repeats", type=int, default=None, help="timed calls per module (default 2x repeats)")
    p.add_argument("--train-repeats", type=int, default=None, help="timed training steps (default: repeats)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="cap on the timed phase of one table (fewer repeats, at least 3; default 4 on cuda, none on cpu)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole run; sections start only with --min-section-seconds left")
    p.add_argument("--min-section-seconds", type=float, default=60.0)
    p.add_argument("--min-repeats", type=int, default=None,
                   help="timed rounds per table that --max-seconds never cuts below (default 30 on cuda, 3 on cpu)")
    p.add_argument("--queued-calls", type=int, default=50, help="calls queued for the steady-state throughput")
    p.add_argument("--queued-seconds", type=float, default=10.0, help="time cap of one steady-state measurement")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (cpu)")
    p.add_argument("--quick", action="store_true",
                   help="1 warm-up, 3 repeats, main size and batch only: a check that everything runs")
    p.add_argument("--out", default=None, help="output folder (default: $OUT when set, else benchmarks/results)")
    p.add_argument("--tag", default=None, help="file name stem (default: cpu / gpu)")
    p.add_argument("--append", action="store_true",
                   help="keep the sections of an existing <out>/<tag>.json (a run split into several commands)")
    args = p.parse_args(argv)
    args.argv = argv

    cuda = args.device.startswith("cuda")
    args.dtype = _names(args.dtype) if args.dtype else (["bf16", "fp32"] if cuda else ["fp32"])
    for d in args.dtype:
        if d not in ("fp32", "bf16"):
            p.error(f"--dtype: unknown {d!r}; use fp32 and/or bf16")
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown {v!r}; use {list(VARIANTS)}")
    preset_size = {"paper": 480, "tiny": 96, "micro": 64}[args.preset]
    args.main_size = args.main_size or (args.image_sizes[0] if args.image_sizes and preset_size not in
                                        args.image_sizes else preset_size)
    if args.image_sizes is None:  # --quick: the main size only, unless sizes are given
        args.image_sizes = [320, 480, 640, 800] if args.preset == "paper" and not args.quick else [args.main_size]
    if args.batch_sizes is None:
        args.batch_sizes = [1] if not cuda else [8] if args.quick else [1, 8, 32]
    if args.main_batch is None:
        args.main_batch = 8 if 8 in args.batch_sizes else args.batch_sizes[0]
    for s in [*args.image_sizes, args.main_size]:
        if s % 32:
            p.error(f"image size {s} is not a multiple of 32")
    args.module_batch = args.module_batch or args.main_batch
    args.compile_batch = args.compile_batch or max(args.batch_sizes)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5 if cuda else 1)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 30 if cuda else 10)
    args.module_repeats = args.module_repeats or 2 * args.repeats
    args.train_repeats = args.train_repeats or args.repeats
    if args.min_repeats is None:
        args.min_repeats = 30 if cuda and not args.quick else 3
    if args.max_seconds is None and cuda and not args.quick:
        args.max_seconds = 4.0
    if args.train_variants is None:
        args.train_variants = list(args.variants) if cuda else [v for v in ("Base", "Full") if v in args.variants]
    if args.sections is None:
        args.sections = ["syncs", "modules", "rows", "sweep", "batch"]
        args.sections += ["channels_last"] if args.channels_last else []
        args.sections += ["compile"] if args.compile else []
    for s in args.sections:
        if s not in SECTIONS:
            p.error(f"--sections: unknown {s!r}; use {list(SECTIONS)}")
    env_out = os.environ.get("OUT")
    if args.out is None:
        args.out = env_out or str(Path(__file__).resolve().parent / "results")
        args.out_display = "$OUT" if env_out else "benchmarks/results"
    else:
        args.out_display = args.out
    args.tag = args.tag or ("gpu" if cuda else "cpu")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available in this torch build / machine.")
        torch.backends.cudnn.benchmark = True
    else:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return Runner(args).execute()


if __name__ == "__main__":
    main()
