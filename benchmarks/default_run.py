"""Measure the default run: ``python examples/train.py`` with no arguments, as a fresh clone runs it.

Runs the training example in a child process with its defaults (the ``tiny`` preset and its
recipe on 3,000 synthetic samples, evaluation on the test split), into ``--output-dir`` and with a
fresh cache folder, so the synthetic data is generated as on a first run; then scores the run's
best checkpoint on a **held-out** synthetic split (generator seed 7, 600 samples: a seed the run
never saw), with the free baselines and a test-time-augmentation one (the model at 0.75x and 1.25x
the input size).

Writes ``results/default_run.{json,md}`` and ``results/default_run_report.md`` (the held-out
report as every evaluation prints it): the wall time and peak resident memory of the child
(``ru_maxrss``), the time of each phase from the run's log, the run's own test metrics
(``metrics.json``) and the held-out ones (segmentation, how well each signal ranks error pixels and
failed samples, calibration of the predicted IoU when the model has the risk head, per-tag
figures). README.md, the docs and the CHANGELOG quote these numbers through value markers
(``benchmarks/docs_results.py``). Run from the repository root::

    python -m benchmarks.default_run                 # about 8-15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._measure import environment, load_average
from benchmarks._report import write_result

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_SEED, HELDOUT_TEST = 7, 600
TAGS = ("dense=true", "tiny=true", "thin=true", "query=category", "query=colour", "query=colour_region",
        "query=position", "query=region", "query=size", "query=on_road")

#: (label, key in the held-out results): the rows of the signal table
PIXEL_SIGNALS = [("U^p (RUS)", "unc/AUROC"), ("margin of the final logits", "unc/margin/AUROC"),
                 ("pixel risk head", "unc/error_map/AUROC")]
SAMPLE_SIGNALS = [("risk head: failure probability", "risk"), ("risk head: predicted IoU", "quality"),
                  ("mean margin over the mask", "margin"), ("coarse vs final disagreement", "disagreement"),
                  ("mean U^p outside the mask", "u_outside"), ("mean U^p over the mask", "u_mask"),
                  ("test-time scales (0.75x, 1.25x)", "tta")]


def run_training(output_dir: Path, cache_dir: Path, extra: list[str]) -> dict[str, Any]:
    """The training example with its defaults (and ``extra`` flags) in a child process: wall time and peak
    resident memory."""
    command = [sys.executable, "examples/train.py", "--output-dir", str(output_dir), "--cache-dir", str(cache_dir),
               *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"the default run failed (exit status {proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    shown = " ".join(["python examples/train.py", *(shlex.quote(a) for a in extra)])
    return {"command": f"{shown} (--output-dir and --cache-dir set by the benchmark)", "extra_flags": extra,
            "wall_s": seconds, "peak_rss_mib": peak_kib / 1024, "stdout_tail": proc.stdout[-1500:]}


def phase_times(output_dir: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    for line in (output_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "time":
            times = {k.removeprefix("time/"): v for k, v in record.items() if k.startswith("time/")}
    return times


def heldout(output_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """The best checkpoint on the held-out split, with the test-time-scales baseline."""
    from uncertainty_rrsis.data import ensure_synthetic
    from uncertainty_rrsis.models import CroBIMU
    from uncertainty_rrsis.training import build_dataset, evaluate, evaluation_loader, load_tokenizer

    checkpoint = output_dir / "checkpoints" / "best"
    model = CroBIMU.from_pretrained(checkpoint)
    tokenizer = load_tokenizer(checkpoint / "tokenizer")
    root = ensure_synthetic(cache_dir, seed=HELDOUT_SEED, image_size=model.config.image_size, n_train=1, n_val=1,
                            n_test=HELDOUT_TEST, progress=False)
    dataset = build_dataset("synthetic", root, "test", tokenizer=tokenizer, model_config=model.config)
    return evaluate(model, evaluation_loader(dataset, batch_size=16), device=torch.device("cpu"), boundary=True,
                    tta_scales=(0.75, 1.25))


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def render(result: dict[str, Any]) -> str:
    env, train, own, held = result["environment"], result["training"], result["own_test"], result["heldout"]

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.2f}"

    def num(value: float | None, digits: int = 3) -> str:
        return "—" if value is None or value != value else f"{value:.{digits}f}"

    lines = [
        f"# The default run ({env.get('git_commit') or 'uncommitted'})",
        "",
        f"`{train['command']}` on {env.get('cpu')} ({env.get('cpu_count')} cores, {env.get('torch_threads')} torch "
        f"threads), torch {env.get('torch')}; load average {result['load_average']}. Wall time "
        f"{result['wall_text']} (data generation included), peak resident memory "
        f"{train['peak_rss_mib'] / 1024:.2f} GB; {result['steps']} optimizer steps.",
        "",
        "| phase | s |",
        "| --- | ---: |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in result["phases"].items()],
        "",
        "## Segmentation",
        "",
        f"The run's own test split (600 samples of generator seed 0) and the held-out split ({HELDOUT_TEST} "
        f"samples of generator seed {HELDOUT_SEED}), best-on-val checkpoint (step {result['best_step']}), in %:",
        "",
        "| split | mIoU | oIoU | Pr@0.5 | Pr@0.7 | Pr@0.9 | boundary IoU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m, prefix in (("own test", own, ""), ("held-out", held, "")):
        lines.append(f"| {name} | {pct(m.get(prefix + 'mIoU'))} | {pct(m.get(prefix + 'oIoU'))} | "
                     f"{pct(m.get(prefix + 'Pr@0.5'))} | {pct(m.get(prefix + 'Pr@0.7'))} | "
                     f"{pct(m.get(prefix + 'Pr@0.9'))} | {pct(m.get(prefix + 'bIoU'))} |")
    lines += ["", "## Where and when it is wrong (held-out split)", "",
              "Error pixels (the final mask's wrong pixels):", "",
              "| signal | AUROC | AUPRC |", "| --- | ---: | ---: |"]
    for label, key in PIXEL_SIGNALS:
        if held.get(key) is not None:
            lines.append(f"| {label} | {num(held[key])} | {num(held.get(key.replace('AUROC', 'AUPRC')))} |")
    failed = held.get("unc/failure/rate")
    lines += ["", f"Failed samples (IoU < 0.5: {pct(failed)} % of the split):", "",
              "| signal | AUROC | AUPRC | AURC |", "| --- | ---: | ---: | ---: |"]
    for label, score in SAMPLE_SIGNALS:
        key = f"unc/failure/{score}/AUROC"
        if held.get(key) is not None:
            lines.append(f"| {label} | {num(held[key])} | {num(held.get(f'unc/failure/{score}/AUPRC'))} | "
                         f"{num(held.get(f'unc/failure/{score}/AURC'))} |")
    for label, score in (("oracle order", "oracle"), ("random order", "random")):
        if held.get(f"unc/failure/{score}/AURC") is not None:
            lines.append(f"| {label} | | | {num(held[f'unc/failure/{score}/AURC'])} |")
    if held.get("unc/quality/MAE") is not None:
        lines += ["", f"Predicted IoU: mean absolute error {num(held['unc/quality/MAE'])} (the best constant: "
                      f"{num(held.get('unc/quality/MAE_constant'))})."]
    groups, unc_groups = held.get("breakdown") or {}, held.get("unc_breakdown") or {}
    tag_rows = [(tag, groups[tag], unc_groups.get(tag, {})) for tag in TAGS if tag in groups]
    if tag_rows:
        lines += ["", "Held-out, per kind of sample (mIoU in %; failure AUROC of the mean margin and, with the risk "
                      "head, of its failure probability):", "",
                  "| samples | count | mIoU | Pr@0.9 | failed % | failure AUROC margin | failure AUROC risk head |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {tag} | {int(m['count'])} | {pct(m['mIoU'])} | {pct(m['Pr@0.9'])} | "
                  f"{pct(u.get('failure/rate'))} | {num(u.get('failure/margin/AUROC'))} | "
                  f"{num(u.get('failure/risk/AUROC'))} |" for tag, m, u in tag_rows]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, tag: str, result: dict[str, Any]) -> Path:
    """``<tag>_report.md``: the held-out report as every evaluation prints it (what the docs show)."""
    from uncertainty_rrsis.training.evaluation import format_reliability, format_uncertainty

    held = result["heldout"]
    text = format_uncertainty(held)
    if held.get("unc_reliability"):
        text += "\n" + format_reliability(held["unc_reliability"])
    path = folder / f"{tag}_report.md"
    body = (f"# The default run's held-out report ({result['environment'].get('git_commit') or 'uncommitted'})\n\n"
            f"```text\n{text.rstrip()}\n```\n")
    tmp = folder / f".{path.name}.tmp"
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/default_run_measured", help="the run's folder (replaced)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="default_run")
    parser.add_argument("--from-run", help="score an existing run folder instead of training (no time or memory)")
    parser.add_argument("--train-args", default="",
                        help="flags added to the training command, e.g. '--model {\"score_level\": -1}'")
    args = parser.parse_args(argv)
    start_load = load_average()
    output_dir = Path(args.from_run or args.output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"
        if args.from_run:
            train = {"command": f"(scored from {args.from_run})", "wall_s": None, "peak_rss_mib": None}
        else:
            if output_dir.exists():
                shutil.rmtree(output_dir)
            train = run_training(output_dir, cache_dir, shlex.split(args.train_args))
        held = heldout(output_dir, cache_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    own = metrics["results"]["test"]
    result = {
        "training": train, "wall_s": train["wall_s"],
        "wall_text": minutes(train["wall_s"]) if train["wall_s"] is not None else "not measured",
        "peak_rss_gb": None if train["peak_rss_mib"] is None else train["peak_rss_mib"] / 1024,
        "phases": phase_times(output_dir), "steps": metrics.get("steps"),
        "best_step": (metrics.get("selection") or {}).get("step"), "own_test": own,
        "own_test_text_masked": metrics["results"].get("test/text_masked"), "heldout": held,
        "heldout_split": {"generator_seed": HELDOUT_SEED, "samples": HELDOUT_TEST},
        "environment": environment(torch.device("cpu")),
        "load_average": {"start": start_load, "end": load_average()},
    }
    path = write_result(Path(args.results), args.tag, result, render(result))
    write_report(Path(args.results), args.tag, result)
    print(render(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
