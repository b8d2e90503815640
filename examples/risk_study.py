"""Which answers to trust: the risk heads against the free baselines, on the default run.

Each variant is the no-argument ``python examples/train.py`` (the ``tiny`` preset, its recipe: 935
steps of 16 on 3,000 synthetic samples) with one change, trained with three seeds. Every run's
best-on-val checkpoint is scored on a **held-out** synthetic test split (generator seed 7, which
no run trained, validated or was tuned on):

* failed samples (IoU < 0.5): AUROC, AUPRC and AURC of the risk head's failure probability and of
  its predicted IoU, next to the baselines that cost nothing or little: the mean margin over the
  predicted mask, the coarse-vs-final disagreement, the mean ``U^p`` outside the predicted mask,
  and a test-time augmentation (the model at 0.75x and 1.25x the input size, ``1 -`` the mean IoU
  of those predictions with the plain one; a change of scale keeps every sentence true);
* the predicted IoU's mean absolute error against that of the best constant;
* error pixels: AUROC and AUPRC of the pixel risk head against the margin of the final logits;
* segmentation: mIoU, Pr@0.9, boundary IoU (held-out), and the run's own test-split mIoU and Pr@0.9.

Writes ``risk_study.json`` (every run's numbers) and ``risk_study.md`` (mean +- std over the seeds)
into ``--results`` (default ``benchmarks/results``), each with the commit and the machine.

Examples::

    python examples/risk_study.py                                  # every variant x 3 seeds
    python examples/risk_study.py --variants default risk --seeds 0
    python examples/risk_study.py --list
    python examples/risk_study.py --text-weights sentence-transformers/all-MiniLM-L6-v2   # as measured

Finished runs are reused (their ``heldout.json`` is read back).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from uncertainty_rrsis.data import ensure_synthetic
from uncertainty_rrsis.models import CroBIMU
from uncertainty_rrsis.training import (
    TrainConfig,
    build_dataset,
    build_trainer,
    environment_info,
    evaluate,
    evaluation_loader,
    frozen_text_encoder,
    load_tokenizer,
    main_guard,
)

#: name -> (what changes against the default run, model-config changes, training changes)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("the default run as it was (no risk heads)", {"risk_head": False, "pixel_risk_head": False}, {}),
    "risk": ("both risk heads, reading the model without changing it",
             {"risk_head": True, "pixel_risk_head": True, "risk_detach": True}, {}),
    "risk_grad": ("both risk heads, their gradient reaching the model (weight 1)",
                  {"risk_head": True, "pixel_risk_head": True, "risk_detach": False}, {}),
    "risk_grad_0.1": ("both risk heads, their gradient reaching the model (weight 0.1)",
                      {"risk_head": True, "pixel_risk_head": True, "risk_detach": False}, {"lambda_risk": 0.1}),
}

#: (column title, key in the held-out results, scale, digits)
COLUMNS: list[tuple[str, str, float, int]] = [
    ("fail AUROC risk", "unc/failure/risk/AUROC", 1.0, 3),
    ("fail AUROC predicted IoU", "unc/failure/quality/AUROC", 1.0, 3),
    ("fail AUROC margin", "unc/failure/margin/AUROC", 1.0, 3),
    ("fail AUROC disagreement", "unc/failure/disagreement/AUROC", 1.0, 3),
    ("fail AUROC U^p outside", "unc/failure/u_outside/AUROC", 1.0, 3),
    ("fail AUROC TTA", "unc/failure/tta/AUROC", 1.0, 3),
    ("fail AUPRC risk", "unc/failure/risk/AUPRC", 1.0, 3),
    ("fail AUPRC margin", "unc/failure/margin/AUPRC", 1.0, 3),
    ("AURC risk", "unc/failure/risk/AURC", 1.0, 3),
    ("AURC predicted IoU", "unc/failure/quality/AURC", 1.0, 3),
    ("AURC margin", "unc/failure/margin/AURC", 1.0, 3),
    ("AURC oracle", "unc/failure/oracle/AURC", 1.0, 3),
    ("AURC random", "unc/failure/random/AURC", 1.0, 3),
    ("IoU MAE", "unc/quality/MAE", 1.0, 3),
    ("IoU MAE constant", "unc/quality/MAE_constant", 1.0, 3),
    ("px AUROC pixel head", "unc/error_map/AUROC", 1.0, 3),
    ("px AUROC margin", "unc/margin/AUROC", 1.0, 3),
    ("px AUPRC pixel head", "unc/error_map/AUPRC", 1.0, 3),
    ("px AUPRC margin", "unc/margin/AUPRC", 1.0, 3),
    ("px AUROC U^p", "unc/AUROC", 1.0, 3),
    ("failed", "unc/failure/rate", 100.0, 1),
    ("mIoU", "mIoU", 100.0, 1),
    ("Pr@0.9", "Pr@0.9", 100.0, 1),
    ("boundary IoU", "bIoU", 100.0, 1),
    ("own test mIoU", "own/mIoU", 100.0, 2),
    ("own test Pr@0.9", "own/Pr@0.9", 100.0, 1),
]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def cell(values: list[float], scale: float, digits: int) -> str:
    mean, std = mean_std([scale * v for v in values])
    return "—" if mean != mean else f"{mean:.{digits}f} ± {std:.{digits}f}"


def train_one(args: argparse.Namespace, variant: str, seed: int) -> Path:
    """Train one run (or reuse a finished one; continue an unfinished one); returns its folder."""
    _, model_changes, train_changes = VARIANTS[variant]
    folder = Path(args.output_dir) / f"{variant}-seed{seed}"
    if not (folder / "metrics.json").is_file():
        text_model, text_train = frozen_text_encoder(args.text_weights)
        cfg = TrainConfig(seed=seed, output_dir=str(folder), resume=folder.is_dir(), device=args.device,
                          progress=args.progress, tensorboard=False, panels=0, cache_dir=args.cache_dir,
                          model={**text_model, **model_changes}, **{**text_train, **train_changes})
        build_trainer(cfg).fit()
    return folder


def heldout_eval(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The best checkpoint of ``folder`` on the held-out split, with the TTA baseline (cached)."""
    done = folder / "heldout.json"
    if done.is_file():
        return with_own_test(folder, json.loads(done.read_text()))
    checkpoint = folder / "checkpoints" / ("best" if (folder / "checkpoints" / "best").is_dir() else "final")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model = CroBIMU.from_pretrained(checkpoint, device=device)
    tokenizer = load_tokenizer(checkpoint / "tokenizer" if (checkpoint / "tokenizer").is_dir()
                               else model.config.text.name)
    root = ensure_synthetic(args.cache_dir, seed=args.heldout_seed, image_size=model.config.image_size,
                            n_train=1, n_val=1, n_test=args.heldout_test, progress=False)
    dataset = build_dataset("synthetic", root, "test", tokenizer=tokenizer, model_config=model.config)
    result = evaluate(model, evaluation_loader(dataset, batch_size=16), device=device, boundary=True,
                      tta_scales=(0.75, 1.25))
    result["checkpoint"] = checkpoint.name
    done.write_text(json.dumps(result, indent=1, default=str))
    return with_own_test(folder, result)


def with_own_test(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the run's own test-split mIoU and Pr@0.9 (its ``metrics.json``) as ``own/...``."""
    own = json.loads((folder / "metrics.json").read_text())["results"]["test"]
    return {**result, "own/mIoU": own["mIoU"], "own/Pr@0.9": own["Pr@0.9"]}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "uncertainty_rrsis", "examples"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| variant | what changes | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * len(COLUMNS)]
    for variant, runs in results.items():
        cells = [cell([v for r in runs if (v := r.get(key)) is not None], scale, digits)
                 for _, key, scale, digits in COLUMNS]
        lines.append(f"| `{variant}` | {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--heldout-seed", type=int, default=7, help="generator seed of the held-out test split")
    parser.add_argument("--heldout-test", type=int, default=600, help="held-out test samples")
    parser.add_argument("--cache-dir", default=".cache/uncertainty_rrsis")
    parser.add_argument("--output-dir", default="runs/risk_study", help="one folder per run")
    parser.add_argument("--results", default="benchmarks/results", help="where risk_study.{json,md} go")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--text-weights", metavar="ID_OR_FOLDER",
                        help="a pretrained text encoder (Hub id or folder), frozen and without the learning-rate "
                             "warm-up, instead of the tiny preset's encoder learnt from scratch")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--trained-commit", help="the commit the runs were trained at, when they were trained "
                                                 "earlier than this report is written (default: this commit)")
    args = parser.parse_args(argv)
    if args.list:
        text = "\n".join(f"{name:16s} {VARIANTS[name][0]}" for name in VARIANTS)
        print(text)
        return text

    def body() -> str:
        results = {v: [heldout_eval(args, train_one(args, v, s)) for s in args.seeds] for v in args.variants}
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
        head = (f"# Risk heads against the free baselines on the default run\n\nHeld-out synthetic test split "
                f"(generator seed {args.heldout_seed}, {args.heldout_test} samples), best-on-val checkpoint of the "
                f"no-argument `examples/train.py` with one change per variant; seeds {args.seeds}; mean ± std "
                f"over the seeds. fail = failed samples (IoU < 0.5); AURC with risk 1 - IoU (lower is better); "
                f"px = error pixels of the final prediction. Runs trained at commit {args.trained_commit or commit()}"
                f", report written at {commit()}; {machine}, torch {torch.__version__}.\n\n")
        text = head + table(results) + "\n"
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        (out / "risk_study.md").write_text(text)
        payload = {"args": vars(args), "commit": commit(), "trained_commit": args.trained_commit or commit(),
                   "environment": environment_info(), "results": results}
        (out / "risk_study.json").write_text(json.dumps(payload, indent=1, default=str))
        print(text)
        return text

    return main_guard(body)


if __name__ == "__main__":
    main(sys.argv[1:])
