"""What refining at the input resolution costs: UDLR on the stride-4 grid vs at 480 x 480.

The `paper` preset's Full model (random init) is built twice, with ``refine_at="feature"`` (UDLR on
the grid of the decoder's logits, stride 4, then upsampled) and ``refine_at="input"`` (``P_fg`` and
``F`` upsampled to the input size first, the paper's "at full resolution"). For each: FLOPs per
image (inference and training step), peak memory and latency (interleaved rounds), and UDLR's own
share. Writes ``udlr_resolution.{json,md}`` with the commit it measured.

Run from the repository root::

    python -m benchmarks.udlr_resolution --device cpu --threads 1        # about 10 minutes on CPU
    python -m benchmarks.udlr_resolution --device cuda --dtype bf16 --batch 8
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks._flops import FLOP_CONVENTION, count_flops
from benchmarks._measure import (
    environment,
    git_commit,
    load_average,
    peak_memory,
    tensor_bytes,
    time_interleaved,
)
from benchmarks._report import write_result
from benchmarks.latency import MODULE_PATHS, build_config
from uncertainty_rrsis import RiskGuidedLoss

ROOT = Path(__file__).resolve().parents[1]
MODES = ("feature", "input")


def _inputs(batch: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    ids = torch.randint(1000, 2000, (batch, 20), generator=g).to(device)
    mask = torch.ones(batch, 20, dtype=torch.long, device=device)
    mask[:, 12:] = 0
    target = (torch.rand(batch, size, size, generator=g) > 0.7).to(device)
    return images, ids, mask, target


def _udlr(counted: dict[str, Any]) -> int:
    """UDLR's forward FLOPs: the wrapper's minus its decoder's, RUS's and UGF's (UDLR runs through
    ``refine``, which no module hook sees; the wrapper does no other counted work). Backward FLOPs are
    not attributed to modules this way; the training-step difference between the two modes is UDLR's."""
    by = counted["by_module"]
    return by["wrapper"] - by["decoder"] - by["rus"] - by["ugf"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from uncertainty_rrsis.models import CroBIMU

    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else None
    images, ids, mask, target = _inputs(args.batch, args.size, device)
    criterion = RiskGuidedLoss()
    models, steps, inference, records = {}, {}, {}, {}
    for mode in MODES:
        torch.manual_seed(0)
        config = build_config("paper", "Full").replace(refine_at=mode, image_size=args.size)
        model = CroBIMU(config).to(device)
        with torch.no_grad():  # a live refinement branch (it starts at zero)
            model.decoder.refinement.head[-1].weight.normal_(std=0.01)
        models[mode] = model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def infer(model=model):
            with torch.no_grad(), (autocast or torch.autocast(device.type, enabled=False)):
                return model(images, ids, mask)

        def step(model=model, optimizer=optimizer):
            with autocast or torch.autocast(device.type, enabled=False):
                loss = criterion(model(images, ids, mask), target, step=10**6).total
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        inference[mode], steps[mode] = infer, step
        model.eval()
        flops_infer = count_flops(infer, prefixes=MODULE_PATHS)
        model.train()
        flops_train = count_flops(lambda model=model: criterion(model(images, ids, mask), target, step=10**6)
                                  .total.backward(), prefixes=MODULE_PATHS)
        model.zero_grad(set_to_none=True)
        weights = tensor_bytes(list(model.parameters()))
        model.eval()
        memory_infer = peak_memory(infer, device, resident_bytes=weights)
        model.train()
        step()  # AdamW state exists from here on
        memory_train = peak_memory(step, device, resident_bytes=weights + tensor_bytes(optimizer.state))
        records[mode] = {
            "gflops_infer": flops_infer["total"] / 1e9 / args.batch,
            "gflops_udlr_infer": _udlr(flops_infer) / 1e9 / args.batch,
            "gflops_train": flops_train["total"] / 1e9 / args.batch,
            "peak_mib_infer": memory_infer["peak_mib"],
            "peak_mib_train": memory_train["peak_mib"],
        }
        print(f"{mode}: {records[mode]}", flush=True)
    for mode in MODES:
        models[mode].eval()
    timing = time_interleaved({f"{m} infer": inference[m] for m in MODES}, device, warmup=args.warmup,
                              repeats=args.repeats)
    for mode in MODES:
        models[mode].train()
    timing |= time_interleaved({f"{m} train": steps[m] for m in MODES}, device, warmup=args.warmup,
                               repeats=args.train_repeats)
    for mode in MODES:
        records[mode]["latency_infer"] = timing[f"{mode} infer"]
        records[mode]["latency_train"] = timing[f"{mode} train"]
    return {
        "settings": {"preset": "paper", "variant": "Full", "image_size": args.size, "batch": args.batch,
                     "dtype": args.dtype, "device": args.device, "warmup": args.warmup, "repeats": args.repeats,
                     "train_repeats": args.train_repeats, "threads": torch.get_num_threads()},
        "environment": {**environment(device), "git_commit": git_commit()},
        "load_average": load_average(),
        "flop_convention": FLOP_CONVENTION,
        "records": records,
    }


def render_markdown(result: dict[str, Any]) -> str:
    s, env, r = result["settings"], result["environment"], result["records"]
    f, i = r["feature"], r["input"]

    def ratio(key: str) -> str:
        return f"{i[key] / f[key]:.2f}x" if f[key] else "-"

    def lat(rec: dict[str, Any]) -> str:
        return f"{rec['median_ms']:.0f} ms ({rec['p25_ms']:.0f}–{rec['p75_ms']:.0f}, n={rec['n']})"

    rows = [
        ("FLOPs per image, inference", f"{f['gflops_infer']:.1f} G", f"{i['gflops_infer']:.1f} G",
         ratio("gflops_infer")),
        ("  of which UDLR", f"{f['gflops_udlr_infer']:.2f} G", f"{i['gflops_udlr_infer']:.2f} G",
         ratio("gflops_udlr_infer")),
        ("FLOPs per image, training step", f"{f['gflops_train']:.1f} G", f"{i['gflops_train']:.1f} G",
         ratio("gflops_train")),
        ("peak memory, inference", f"{f['peak_mib_infer']:.0f} MiB", f"{i['peak_mib_infer']:.0f} MiB",
         ratio("peak_mib_infer")),
        ("peak memory, training step", f"{f['peak_mib_train']:.0f} MiB", f"{i['peak_mib_train']:.0f} MiB",
         ratio("peak_mib_train")),
        ("latency, inference (median, p25–p75)", lat(f["latency_infer"]), lat(i["latency_infer"]),
         f"{i['latency_infer']['median_ms'] / f['latency_infer']['median_ms']:.2f}x"),
        ("latency, training step", lat(f["latency_train"]), lat(i["latency_train"]),
         f"{i['latency_train']['median_ms'] / f['latency_train']['median_ms']:.2f}x"),
    ]
    lines = [
        "# UDLR at the stride-4 grid vs at the input resolution",
        "",
        f"`paper` preset, Full, random init, {s['image_size']} x {s['image_size']}, batch {s['batch']}, {s['dtype']}, "
        f"{env.get('device_name')} ({s['threads']} torch threads), torch {env.get('torch')}, commit "
        f"{env.get('git_commit')}; load average {result.get('load_average')}.",
        "",
        "| | refine_at=\"feature\" (stride 4) | refine_at=\"input\" | input / feature |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        result["flop_convention"],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=6, help="interleaved inference rounds")
    parser.add_argument("--train-repeats", type=int, default=3, help="interleaved training-step rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (cpu)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    write_result(args.out, "udlr_resolution", result, render_markdown(result))
    print(render_markdown(result))


if __name__ == "__main__":
    main()
