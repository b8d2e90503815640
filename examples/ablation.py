"""The paper's ablation (Table V) in miniature: Base, +UGF, +UDLR and Full on the synthetic benchmark.

Every row is trained with the same budget and the same seeds, evaluated on the synthetic test split
(best-on-val checkpoint), and the script writes a Markdown table of mean +/- standard deviation over
the seeds for Pr@0.5, Pr@0.7, Pr@0.9, oIoU, mIoU and the uncertainty AUROC (Base has no uncertainty
map), plus the mIoU per tag (thin targets, tiny targets, dense same-category distractors).

Examples::

    python examples/ablation.py                              # 4 rows x 3 seeds, the default budget
    python examples/ablation.py --seeds 0 1 2 --max-steps 250 --output-dir runs/ablation
    python examples/ablation.py --rows Base Full --seeds 0   # a quick look

Finished runs are reused (their metrics.json is read back), so an interrupted ablation continues
where it stopped when run again with the same arguments (an unfinished run resumes from its
resumable checkpoint when it has one, and starts again in its folder otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from uncertainty_rrsis.training import TrainConfig, Trainer, main_guard

ROWS = {"Base": (False, False), "+UGF": (True, False), "+UDLR": (False, True), "Full": (True, True)}
COLUMNS = ["Pr@0.5", "Pr@0.7", "Pr@0.9", "oIoU", "mIoU", "unc/AUROC"]
TAGS = {"thin": "thin=true", "tiny": "tiny=true", "dense": "dense=true"}


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def cell(values: list[float], *, scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "—"
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def run_one(base: TrainConfig, row: str, seed: int, out: Path) -> dict:
    folder = out / f"{row.replace('+', 'plus_')}-seed{seed}"
    done = folder / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())["results"]["test"]
    fusion, refinement = ROWS[row]
    cfg = base.replace(model={"use_fusion": fusion, "use_refinement": refinement}, seed=seed, output_dir=str(folder),
                       resume=folder.is_dir())  # an unfinished run in its folder: continue it
    Trainer(cfg).fit()
    return json.loads(done.read_text())["results"]["test"]


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| row | " + " | ".join(c.replace("unc/", "U ") for c in COLUMNS) + " | "
             + " | ".join(f"mIoU {t}" for t in TAGS) + " |",
             "| --- |" + " ---: |" * (len(COLUMNS) + len(TAGS))]
    for row, runs in results.items():
        cells = [cell([r[c] for r in runs if c in r], scale=1.0 if c.startswith("unc/") else 100.0,
                      digits=3 if c.startswith("unc/") else 1) for c in COLUMNS]
        for tag in TAGS.values():
            cells.append(cell([r["breakdown"][tag]["mIoU"] for r in runs if tag in r.get("breakdown", {})]))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="ablation rows to train")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (at least 3 for a spread)")
    parser.add_argument("--max-steps", type=int, default=250, help="optimizer steps per run (same for every row)")
    parser.add_argument("--batch-size", type=int, default=16, help="total batch size")
    parser.add_argument("--synthetic-train", type=int, default=3000, help="synthetic training samples")
    parser.add_argument("--output-dir", default="runs/ablation", help="one sub-folder per run + ablation.md")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    base = TrainConfig(max_steps=args.max_steps, epochs=1000, batch_size=args.batch_size, device=args.device,
                       synthetic_train=args.synthetic_train, progress=args.progress, panels=0,
                       model={"text": {"freeze": True}}, tensorboard=False, checkpoint_every=10**9)
    results: dict[str, list[dict]] = {}

    def body() -> str:
        for row in args.rows:
            results[row] = [run_one(base, row, seed, out) for seed in args.seeds]
        text = (f"Synthetic test split, best-on-val checkpoint, {args.max_steps} steps x batch {args.batch_size}, "
                f"seeds {args.seeds}; mean ± std over seeds; Pr/IoU in %, U AUROC of U^p for error pixels.\n\n"
                + table(results) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.md").write_text(text)
        (out / "ablation.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        print(text)
        return text

    return main_guard(body)


if __name__ == "__main__":
    main(sys.argv[1:])
