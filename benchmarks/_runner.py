"""The state of one ``benchmarks.latency`` run and what every section uses.

``Runner`` holds the parsed arguments, the device, the time budget and the run's result dict (written
as ``<out>/<tag>.json`` and ``<out>/<tag>.md`` after each section). Its helpers build the models and
inputs, make an inference call or a training step, count FLOPs, and time a table of whole-model
variants (``measure_models``). ``execute`` runs the sections of ``--sections`` in order; each lives in
``benchmarks/sections/<name>.py`` as ``run(runner) -> dict``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import sections
from benchmarks._common import (
    MODULE_PATHS,
    REAL_TOKENS,
    Deadline,
    autocast,
    build_config,
    is_oom,
    log,
    now,
    sanitize,
    short_error,
)
from benchmarks._flops import FLOP_CONVENTION, count_flops
from benchmarks._measure import (
    environment,
    git_commit,
    load_average,
    peak_memory,
    tensor_bytes,
    time_interleaved,
)


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
            "command": sanitize("python -m benchmarks.latency " + " ".join(
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

    def skip(self, what: str) -> None:
        """Record a part of the run left out for lack of time (the JSON's ``skipped`` list)."""
        self.run["skipped"].append(what)

    def write(self, section: str, payload: dict[str, Any]) -> None:
        """Add a finished section (stamped with the commit it measured) and rewrite ``<tag>.json`` /
        ``<tag>.md`` atomically, so that a run cut short keeps every section that finished."""
        from benchmarks._report import render_markdown, write_result

        payload = {**payload, "git_commit": git_commit(), "finished": now(), "load_average_end": load_average()}
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

    def queued_calls(self, median_ms: float) -> int:
        """Calls for one steady-state measurement: ``--queued-calls``, fewer when that would take longer
        than ``--queued-seconds`` at the measured latency (at least 3)."""
        a = self.args
        return max(3, min(a.queued_calls, int(a.queued_seconds * 1e3 / max(median_ms, 1e-3))))

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
            if not is_oom(err):
                traceback.print_exc()
            log(f"  {mode} {dtype} batch {batch} size {size}: {short_error(err, 200)}")
            records = [{"variant": v, **base, "error": "out of memory" if is_oom(err) else short_error(err)}
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

    # -- driver -----------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        a = self.args
        log(f"device {self.run['environment']['device_name']}, torch {torch.__version__}, "
            f"sections {a.sections}, out {a.out_display}")
        for section in a.sections:
            left = self.deadline.left()
            if left < a.min_section_seconds:
                log(f"section {section!r} skipped: {left:.0f} s left < {a.min_section_seconds} s")
                self.skip(section)
                continue
            log(f"section {section!r} starts ({self.deadline.elapsed():.0f} s elapsed, load {load_average()})")
            t0 = time.perf_counter()
            payload = sections.run(section, self)
            payload["duration_s"] = round(time.perf_counter() - t0, 1)
            self.write(section, payload)
        log(f"done in {self.deadline.elapsed():.0f} s; results in {a.out_display}")
        return self.run
