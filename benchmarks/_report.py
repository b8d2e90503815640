"""Markdown tables of a benchmark run (the dict that ``benchmarks.latency`` writes as JSON).

``python -m benchmarks._report results.json`` prints the tables of a saved run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks._measure import bootstrap_median_ci

__all__ = ["render_markdown", "targets", "write_result"]

def write_result(folder: Path, tag: str, result: dict[str, Any], markdown: str) -> Path:
    """Write one benchmark run as ``<folder>/<tag>.json`` and ``<folder>/<tag>.md``, each atomically
    (a temporary file renamed into place), so a run cut short never leaves half a file. Returns the
    JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{tag}.json", json.dumps(result, indent=1, default=str) + "\n"),
                       (f"{tag}.md", markdown if markdown.endswith("\n") else markdown + "\n")):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / name)
    return folder / f"{tag}.json"


TARGETS = {"latency": 0.05, "memory": 0.05, "flops": 0.05, "params": 0.02}


def _f(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "n/a"
    r = num / den
    return f"{r:.3f} ({(r - 1) * 100:+.1f}%)"


def _share(num: float | None, den: float | None) -> str:
    if num is None or not den:
        return "n/a"
    return f"{100 * num / den:.2f}%"


def _mem(rec: dict[str, Any]) -> float | None:
    """Peak memory of the measured thing alone: own weights (+ optimizer state) + transient peak."""
    return (rec.get("memory") or {}).get("peak_mib")


def _transient(rec: dict[str, Any]) -> float | None:
    return (rec.get("memory") or {}).get("peak_delta_mib")


def _records(run: dict[str, Any], *sections: str) -> list[dict[str, Any]]:
    out = []
    for s in sections:
        out += run.get("sections", {}).get(s, {}).get("records", [])
    return out


def _find(records: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in records:
        if "latency" in r and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def paired_ratio(rec: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float] | None:
    """Median, p25/p75 and a bootstrap 95 % interval of the median of the per-round ratios
    ``t_rec[i] / t_base[i]`` (the two were timed interleaved, round i of one right after round i of
    the other, so slow load drifts cancel)."""
    if not base or rec is base:
        return None
    a, b = rec["latency"].get("times_ms"), base["latency"].get("times_ms")
    if not a or not b or len(a) != len(b):
        return None
    rs = sorted(x / y for x, y in zip(a, b))
    n = len(rs)

    def q(p: float) -> float:
        pos = p * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return rs[lo] + (rs[hi] - rs[lo]) * (pos - lo)

    lo, hi = bootstrap_median_ci(rs)
    return {"median": q(0.5), "p25": q(0.25), "p75": q(0.75), "ci95_low": lo, "ci95_high": hi, "n": n}


def _paired(rec: dict[str, Any], base: dict[str, Any] | None) -> str:
    pr = paired_ratio(rec, base)
    if pr is None:
        return "—"
    return f"{pr['median']:.3f} (95 % CI {pr['ci95_low']:.3f}–{pr['ci95_high']:.3f}, n={pr['n']})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _lat(rec: dict[str, Any]) -> tuple[str, str]:
    lat = rec["latency"]
    return _f(lat["median_ms"]), f"{_f(lat['p25_ms'])}–{_f(lat['p75_ms'])}"


def targets(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Full vs Base at the main setting: one dict per metric with ratio, target and verdict."""
    settings = run["settings"]
    rows = _records(run, "rows")
    out = []
    for mode in ("infer", "train"):
        key = {"mode": mode, "dtype": settings["main_dtype"], "batch": settings["main_batch"],
               "image_size": settings["main_size"], "channels_last": False}
        base, full = _find(rows, variant="Base", **key), _find(rows, variant="Full", **key)
        if not base or not full:
            continue
        pairs = {
            "latency": (full["latency"]["median_ms"], base["latency"]["median_ms"]),
            "memory": (_mem(full), _mem(base)),
            "flops": (full.get("gflops_per_image"), base.get("gflops_per_image")),
        }
        if mode == "infer":
            pairs["params"] = (full["params"]["total"], base["params"]["total"])
        for metric, (f, b) in pairs.items():
            if not f or not b:
                continue
            ratio = f / b
            item = {"mode": mode, "metric": metric, "full": f, "base": b, "ratio": ratio,
                    "target": 1 + TARGETS[metric], "met": ratio <= 1 + TARGETS[metric]}
            if metric == "latency":
                item["paired"] = paired_ratio(full, base)
            out.append(item)
    return out


def _header(run: dict[str, Any]) -> str:
    env, s = run["environment"], run["settings"]
    lines = [
        f"# Benchmark `{run['tag']}`: {env.get('device_name')}",
        "",
        f"- device: {env.get('device_name')} ({s['device']}"
        + (f", {env.get('device_memory_gib')} GiB, driver {env.get('driver')}" if env.get("device_memory_gib") else
           f", {env.get('cpu_count')} cores, {env.get('torch_threads')} torch threads")
        + ")",
        (f"- torch {env.get('torch')} (CUDA {env.get('cuda')}), timm {env.get('timm')}, transformers "
         f"{env.get('transformers')}, Python {env.get('python')}, commit {env.get('git_commit')}"),
        (f"- preset `{s['preset']}` (random init), main setting: {s['main_dtype']}, batch {s['main_batch']}, "
         f"{s['main_size']}x{s['main_size']}; text {s['text_tokens']}"),
        f"- timing: {s['timing']}; warm-up {s['warmup']}, repeats {s['repeats']}"
        + (f" (capped at {s['max_seconds_per_measurement']} s per table)"
           if s.get("max_seconds_per_measurement") else "")
        + "; variants of a table timed interleaved",
        f"- load average (1/5/15 min) at start {run.get('load_average_start')}, at end {run.get('load_average_end')}",
        f"- {run.get('flop_convention')}",
        f"- command: `{run.get('command')}`",
    ]
    commits = {name: sec.get("git_commit") for name, sec in run.get("sections", {}).items()}
    if any(c != env.get("git_commit") for c in commits.values()):
        lines.append("- commit per section: " + ", ".join(f"{name} {c}" for name, c in commits.items()))
    if env.get("git_commit_source"):
        lines.append(f"- commit: {env['git_commit_source']}")
    for earlier in run.get("earlier_commands", []):
        lines.append("- earlier command of this run (its sections that were not re-run are kept): "
                     f"`{earlier.get('command')}` "
                     f"(load average {earlier.get('load_average_start')} -> {earlier.get('load_average_end')})")
    if run.get("skipped"):
        lines.append(f"- skipped (time budget): {', '.join(run['skipped'])}")
    return "\n".join(lines) + "\n"


def _targets_md(run: dict[str, Any]) -> str:
    items = targets(run)
    if not items:
        return ""
    s = run["settings"]
    rows = []
    for t in items:
        unit = {"latency": "ms", "memory": "MiB", "flops": "GFLOPs/img", "params": ""}[t["metric"]]
        pr = t.get("paired")
        paired = f"{pr['median']:.3f} ({pr['ci95_low']:.3f}–{pr['ci95_high']:.3f}, n={pr['n']})" if pr else "—"
        rows.append([t["metric"], t["mode"], f"{_f(t['base'])} {unit}".strip(), f"{_f(t['full'])} {unit}".strip(),
                     _ratio(t["full"], t["base"]), paired, f"<= {t['target']:.2f}"])
    return (f"\n## Full vs Base ({s['main_dtype']}, batch {s['main_batch']}, {s['main_size']}px)\n\n"
            "`Full/Base`: ratio of the medians (memory, FLOPs, parameters: of the values). `Paired`: median "
            "of the per-round ratios Full[i]/Base[i] of the interleaved timing, with a bootstrap 95 % interval "
            "of that median and the number of rounds. `Goal`: the ratio "
            "the modules are meant to stay within.\n\n"
            + _table(["Metric", "Mode", "Base", "Full", "Full/Base", "Paired", "Goal"], rows))


def _modules_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("modules")
    if not sec:
        return ""
    model_recs = _records(run, "rows", "sweep", "batch")
    out = ["\n## Modules alone\n\n",
           ("`% of Base`: the module's median latency (FLOPs) over the Base model's at the same dtype, batch "
            "and image size (forward vs Base inference; forward+backward vs Base training step, which also "
            "includes the optimizer step; FLOPs: forward+backward vs Base forward+backward).\n\n")]
    rows = []
    for r in sec["records"]:
        base = _find(model_recs, variant="Base", mode="infer" if r["mode"] == "fwd" else "train",
                     dtype=r["dtype"], batch=r["batch"], image_size=r["image_size"], channels_last=False)
        med, iqr = _lat(r)
        rows.append([
            r["module"], r["mode"], r["dtype"], str(r["batch"]), str(r["image_size"]), r["shapes"], med, iqr,
            _f(r["throughput_img_s"], 1), _f(r["gflops_per_image"], 3), f"{r['params']:,}", _f(_mem(r), 1),
            _share(r["latency"]["median_ms"], base["latency"]["median_ms"] if base else None),
            _share(r["gflops_per_image"], base.get("gflops_per_image") if base else None),
        ])
    out.append(_table(["Module", "Mode", "dtype", "Batch", "Image", "Shapes", "Median ms", "p25–p75 ms", "img/s",
                       "GFLOPs/img", "Params", "Peak MiB", "% of Base latency", "% of Base FLOPs"], rows))
    if sec.get("fits"):
        out.append("\nCost vs pixel count, `cost ~ pixels^k` fitted by least squares on log-log over the image "
                   "sizes (k = 1: linear in the pixels; k near 0: fixed cost such as kernel launches dominates).\n\n")
        fit_rows = []
        for f in sec["fits"]:
            lat, fl = f.get("latency"), f.get("flops")
            fit_rows.append([f["module"], f["mode"], f["dtype"],
                             f"{lat['exponent']:.2f} (r² {lat['r2']:.2f})" if lat else "n/a",
                             f"{fl['exponent']:.2f}" if fl else "n/a"])
        out.append(_table(["Module", "Mode", "dtype", "Latency exponent k", "FLOPs exponent k"], fit_rows))
    return "".join(out)


def _rows_md(run: dict[str, Any]) -> str:
    recs = _records(run, "rows")
    if not recs:
        return ""
    out = ["\n## Ablation rows (whole model)\n\n"]
    rows = []
    cpu = run["settings"]["device"] == "cpu"
    for r in recs:
        if "latency" not in r:
            rows.append([r["variant"], r["mode"], r.get("error", "failed")] + [""] * (13 if cpu else 12))
            continue
        base = _find(recs, variant="Base", mode=r["mode"], dtype=r["dtype"], batch=r["batch"],
                     image_size=r["image_size"], channels_last=r["channels_last"])
        b = base or {}
        med, iqr = _lat(r)
        row = [
            r["variant"], r["mode"], med, iqr, _f(r["throughput_img_s"], 2),
            _ratio(r["latency"]["median_ms"], b.get("latency", {}).get("median_ms")), _paired(r, base),
            _f(r.get("gflops_per_image"), 1), _ratio(r.get("gflops_per_image"), b.get("gflops_per_image")),
            _f(r["params"]["total"] / 1e6, 3), _ratio(r["params"]["total"], b.get("params", {}).get("total")),
            _f(_mem(r), 0), _ratio(_mem(r), _mem(b) if b else None),
            _f(_transient(r), 0), _ratio(_transient(r), _transient(b) if b else None),
        ]
        if cpu:
            row.append(_f((r.get("memory") or {}).get("rss_delta_mib"), 0))
        rows.append(row)
    header = ["Variant", "Mode", "Median ms", "p25–p75 ms", "img/s", "Latency ×Base", "Paired ×Base", "GFLOPs/img",
              "FLOPs ×Base",
              "Params M", "Params ×Base", "Peak MiB", "Peak ×Base", "Transient MiB", "Transient ×Base"] + (
        ["RSS delta MiB"] if cpu else [])
    s = run["settings"]
    out.append(f"{s['main_dtype']}, batch {s['main_batch']}, {s['main_size']}x{s['main_size']}. `infer`: forward "
               "under no_grad; `train`: forward + RiskGuidedLoss + backward + AdamW step (FLOPs: forward + loss + "
               "backward). Memory: `Peak` = the model's own weights (+ AdamW state when training) + `Transient`, "
               "the peak of what one call allocates on top (activations, gradients, workspace) -- "
               + ("on CPU the peak bytes of live tensors created during the call, counted by a TorchDispatchMode; "
                  "`RSS delta` is the peak resident-set increase of one more call (VmHWM; allocator caching makes "
                  "it rough).\n\n" if cpu else
                  "`torch.cuda.max_memory_allocated` minus what was allocated before the call.\n\n"))
    out.append(_table(header, rows))
    # FLOPs of the parts inside the model
    parts_rows = []
    for r in recs:
        if "flops" not in r or r["variant"] != "Full" or r["mode"] != "infer":  # backward attribution is unreliable
            continue
        base = _find(recs, variant="Base", mode=r["mode"], dtype=r["dtype"], batch=r["batch"],
                     image_size=r["image_size"], channels_last=r["channels_last"])
        base_total = base["flops"]["total"] if base and "flops" in base else None
        by = r["flops"]["by_module"]
        for part in ("vision", "text", "decoder", "rus", "ugf", "udlr"):
            parts_rows.append([r["mode"], part, _f(by.get(part, 0) / 1e9, 3), _share(by.get(part, 0), base_total)])
    if parts_rows:
        out.append("\nFLOPs of the parts of the Full model (inference, per image) and their share of the Base "
                   "model's total (UDLR = the wrapper's FLOPs minus the decoder's, RUS's and UGF's):\n\n")
        out.append(_table(["Mode", "Part", "GFLOPs/img", "% of Base total"], parts_rows))
    return "".join(out)


def _pair_rows(recs: list[dict[str, Any]], key: str) -> list[list[str]]:
    rows = []
    groups = sorted({(r[key], r["mode"]) for r in recs}, key=lambda t: (t[1], t[0]))
    for value, mode in groups:
        base = _find(recs, variant="Base", mode=mode, **{key: value})
        full = _find(recs, variant="Full", mode=mode, **{key: value})
        err = next((r.get("error") for r in recs if r[key] == value and r["mode"] == mode and "error" in r), None)
        if err and not (base and full):
            rows.append([str(value), mode, err] + [""] * 8)
            continue
        b, f = base or {}, full or {}
        rows.append([
            str(value), mode,
            _f(b.get("latency", {}).get("median_ms")), _f(f.get("latency", {}).get("median_ms")),
            _ratio(f.get("latency", {}).get("median_ms"), b.get("latency", {}).get("median_ms")),
            _f(b.get("throughput_img_s"), 1), _f(f.get("throughput_img_s"), 1),
            _f(b.get("gflops_per_image"), 1) if "gflops_per_image" in b else "—",
            _ratio(f.get("gflops_per_image"), b.get("gflops_per_image")) if "gflops_per_image" in b else "—",
            _f(_mem(b), 0) if b else "n/a", _ratio(_mem(f), _mem(b)) if b and f else "n/a",
        ])
    return rows


_PAIR_HEADER = ["Base ms", "Full ms", "Latency Full/Base", "Base img/s", "Full img/s", "Base GFLOPs/img",
                "FLOPs Full/Base", "Base peak MiB", "Memory Full/Base"]


def _sweep_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("sweep")
    if not sec:
        return ""
    s = run["settings"]
    out = [f"\n## Image size (Base vs Full, inference, {s['main_dtype']}, batch {s['main_batch']})\n\n",
           _table(["Image", "Mode", *_PAIR_HEADER], _pair_rows(sec["records"], "image_size"))]
    if sec.get("fits"):
        out.append("\nExponent k of `cost ~ pixels^k` over the image sizes:\n\n")
        out.append(_table(["Variant", "Latency k", "FLOPs k"], [
            [f["variant"],
             f"{f['latency']['exponent']:.2f} (r² {f['latency']['r2']:.2f})" if f.get("latency") else "n/a",
             f"{f['flops']['exponent']:.2f}" if f.get("flops") else "n/a"] for f in sec["fits"]]))
    return "".join(out)


def _batch_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("batch")
    if not sec or not sec["records"]:
        return ""
    s = run["settings"]
    out = (f"\n## Batch size (Base vs Full, {s['main_dtype']}, {s['main_size']}px)\n\n"
           + _table(["Batch", "Mode", *_PAIR_HEADER], _pair_rows(sec["records"], "batch")))
    queued = [r for r in sec["records"] if isinstance(r.get("throughput_queued"), dict)
              and "items_per_s" in r["throughput_queued"]]
    if queued:
        out += ("\nSteady-state throughput: calls queued back to back, one synchronisation at the end "
                "(a serving loop), not batch / per-call latency.\n\n"
                + _table(["Variant", "Batch", "Images/s (queued)", "Calls"],
                         [[r["variant"], str(r["batch"]), _f(r["throughput_queued"]["items_per_s"], 1),
                           str(r["throughput_queued"]["calls"])] for r in queued]))
    return out


def _channels_last_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("channels_last")
    if not sec or not sec["records"]:
        return ""
    rows_recs = _records(run, "rows")
    rows = []
    for r in sec["records"]:
        if "latency" not in r:
            rows.append([r["variant"], r["mode"], r.get("error", "failed"), "", "", ""])
            continue
        ref = _find(rows_recs, variant=r["variant"], mode=r["mode"], dtype=r["dtype"], batch=r["batch"],
                    image_size=r["image_size"], channels_last=False)
        base = _find(sec["records"], variant="Base", mode=r["mode"])
        rows.append([r["variant"], r["mode"], _f(ref["latency"]["median_ms"]) if ref else "n/a",
                     _f(r["latency"]["median_ms"]),
                     _ratio(r["latency"]["median_ms"], ref["latency"]["median_ms"] if ref else None),
                     _ratio(r["latency"]["median_ms"], base["latency"]["median_ms"] if base else None)])
    s = run["settings"]
    return (f"\n## channels_last ({s['main_dtype']}, batch {s['main_batch']}, {s['main_size']}px)\n\n"
            "Contiguous numbers come from the ablation-rows table (timed earlier in the same run).\n\n"
            + _table(["Variant", "Mode", "Contiguous ms", "channels_last ms", "CL/contiguous", "Full/Base (CL)"], rows))


def _compile_md(run: dict[str, Any], key: str = "compile") -> str:
    sec = run.get("sections", {}).get(key)
    if not sec or not sec["records"]:
        return ""
    rows = []
    for r in sec["records"]:
        if "error" in r:
            rows.append([r["variant"], r.get("backend", ""), str(r.get("fullgraph", "n/a")),
                         str(r.get("graph_breaks", "n/a")), r["error"][:200], "", "", ""])
            continue
        queued = r.get("throughput_queued", {})
        rows.append([r["variant"], r.get("compile_mode") or "default", r["backend"], "yes" if r["fullgraph"] else "no",
                     str(r["graph_breaks"]), _f(r["compile_s"], 1), _f(r["eager"]["median_ms"]),
                     _f(r["compiled"]["median_ms"]), f"{r['speedup']:.2f}x",
                     _f(queued.get("eager", {}).get("items_per_s"), 1),
                     _f(queued.get("compiled", {}).get("items_per_s"), 1)])
    first = sec["records"][0]
    title = "torch.compile with CUDA graphs" if key == "cudagraphs" else "torch.compile"
    out = [f"\n## {title} (inference, {first['dtype']}, batch {first['batch']}, {first['image_size']}px)"
           + (" (cut short)" if sec.get("partial") else "") + "\n\n",
           ("`compile s`: wall time of the first compiled call (tracing, compilation and one run); static shapes. "
            "`images/s queued`: steady state, calls queued back to back with one synchronisation at the end.\n\n"),
           _table(["Variant", "Mode", "Backend", "fullgraph=True", "Graph breaks", "Compile s", "Eager ms",
                   "Compiled ms", "Speed-up", "Eager images/s queued", "Compiled images/s queued"], rows)]
    modes = sorted({r.get("compile_mode") or "default" for r in sec["records"]})
    for mode in modes:
        timed = {r["variant"]: r for r in sec["records"]
                 if "speedup" in r and (r.get("compile_mode") or "default") == mode}
        if "Full" not in timed or "Base" not in timed:
            continue
        full, base = timed["Full"], timed["Base"]
        together = sec.get("timed_together", False)
        lines = []
        for kind in ("eager", "compiled"):
            pr = paired_ratio({"latency": full[kind]}, {"latency": base[kind]}) if together else None
            paired = (f", paired {pr['median']:.3f} (95 % CI {pr['ci95_low']:.3f}–{pr['ci95_high']:.3f}, n={pr['n']})"
                      if pr else "")
            lines.append(f"- Full/Base {kind}: {_ratio(full[kind]['median_ms'], base[kind]['median_ms'])}{paired}\n")
        how = ("all four timed interleaved, round by round" if together else
               "each variant timed interleaved with its own compiled version, Full and Base one after the other")
        out.append(f"\nFull vs Base, compile mode {mode} ({how}):\n\n" + "".join(lines))
    reasons = [(r["variant"], x.strip().splitlines()[0] if x.strip() else x)
               for r in sec["records"] for x in r.get("break_reasons", [])]
    if reasons:
        out.append("\nGraph-break reasons (first line; the JSON has more):\n\n"
                   + "".join(f"- {v}: {x}\n" for v, x in reasons))
    return "".join(out)


def _training_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("training")
    if not sec or not sec["records"]:
        return ""
    rows = []
    for r in sec["records"]:
        if "error" in r:
            rows.append([r["variant"], r["kind"], str(r["batch"]), r["error"][:200]] + [""] * 6)
            continue
        big = r.get("largest_batch", {})
        rows.append([r["variant"], r["kind"], str(r["batch"]), _f(r["throughput_queued"]["items_per_s"], 1),
                     _f(r["first_step_s"], 1), _f(r["peak_delta_mib"], 0), str(big.get("predicted") or "—"),
                     str(big.get("fits") or "—"), str(big.get("fails") or "—"), str(len(big.get("tried", [])))])
    first = sec["records"][0]
    limit = sec.get("memory_limit_mib")
    return (f"\n## Training throughput and the largest batch ({first['dtype']}, {first['image_size']}px)"
            + (" (cut short)" if sec.get("partial") else "") + "\n\n"
            "One step: forward, RiskGuidedLoss, backward, AdamW. `images/s`: steps queued back to back, one "
            "synchronisation at the end. `first step s`: the first call (compiled: tracing and compilation). "
            "`peak MiB`: above the weights, gradients and AdamW state included. Largest batch in the memory free "
            + (f"({_f(limit, 0)} MiB)" if limit else "(none given: no search)")
            + ": predicted from the peaks at this batch and half of it (linear in the batch), then searched "
            "within a bracket; `fits`: the largest batch whose step ran, `fails`: the smallest that did not.\n\n"
            + _table(["Variant", "Kind", "Batch", "images/s", "First step s", "Peak MiB", "Largest predicted",
                      "Fits", "Fails", "Steps tried"], rows))


def _syncs_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("syncs")
    if not sec or not sec["records"]:
        return ""
    cuda = any("cuda_syncs" in r for r in sec["records"])

    def where(hits: list[dict[str, Any]]) -> str:
        return "; ".join(f"{h.get('op', 'sync')} at `{h['where']}`" + (f" ×{h['count']}" if h["count"] > 1 else "")
                         for h in hits) or "none"

    launches = {(r["variant"], r["mode"]): r["launches"]["total"] for r in sec["records"] if "launches" in r}
    rows = []
    for r in sec["records"]:
        row = [r["variant"], r["mode"], str(sum(h["count"] for h in r["sync_prone_ops"])), where(r["sync_prone_ops"])]
        if cuda:
            row += [str(sum(h["count"] for h in r.get("cuda_syncs", []))), where(r.get("cuda_syncs", []))]
        if launches:
            n, base = launches.get((r["variant"], r["mode"])), launches.get(("Base", r["mode"]))
            row += [f"{n:,}" if n is not None else "—", _ratio(n, base) if n is not None and base else "—"]
        rows.append(row)
    header = (["Variant", "Mode", "Sync-prone ops", "Where"] + (["CUDA syncs", "Where (CUDA)"] if cuda else [])
              + (["Ops launched", "Launches ×Base"] if launches else []))
    return ("\n## Host-device synchronisations (one inference, one training step)\n\n"
            "Sync-prone ops: ATen ops that block the host when their tensors are on a GPU (`.item()`, "
            "data-dependent sizes, tensors built from host data), counted with a dispatch mode on any device "
            "(training: forward, loss and backward). "
            + ("CUDA syncs: what `torch.cuda.set_sync_debug_mode(\"warn\")` reported. " if cuda else "")
            + ("Ops launched: ATen ops that do device work (views, aliases and bare allocations not counted); "
               "in eager mode each launches at least one kernel." if launches else "")
            + "\n\n" + _table(header, rows))


def _decoders_md(run: dict[str, Any]) -> str:
    sec = run.get("sections", {}).get("decoders")
    if not sec or not sec["records"]:
        return ""
    rows = []
    for mode in ("infer", "train"):
        recs = {r["variant"]: r for r in sec["records"] if r["mode"] == mode}
        if "Base" in recs and "Full" in recs:
            base, full = recs["Base"], recs["Full"]
            rows.append([full["decoder"], mode, _f(base["latency"]["median_ms"]), _f(full["latency"]["median_ms"]),
                         _ratio(full["latency"]["median_ms"], base["latency"]["median_ms"]), _paired(full, base),
                         _ratio(full["params"]["total"], base["params"]["total"])])
    return ("\n## A second decoder: Base vs Full\n\n"
            "LAVT's `SimpleDecoding` (look-alike in `examples/field_decoders.py`) wrapped with the `lavt` recipe "
            "at Swin-B widths, 768-wide text.\n\n"
            + _table(["Decoder", "Mode", "Base ms", "Full ms", "Full/Base", "Paired", "Params ×Base"], rows))


def render_markdown(run: dict[str, Any]) -> str:
    """All tables of a run as one Markdown document."""
    parts = [_header(run), _targets_md(run), _rows_md(run), _modules_md(run), _sweep_md(run), _batch_md(run),
             _channels_last_md(run), _compile_md(run), _compile_md(run, "cudagraphs"), _training_md(run),
             _decoders_md(run), _syncs_md(run)]
    return "".join(p for p in parts if p)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(render_markdown(json.loads(Path(path).read_text(encoding="utf-8"))))
