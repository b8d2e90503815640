"""The paper's ablation (Table V): Base, +UGF, +UDLR and Full, each over several seeds.

Every row is trained with the same settings and the same seeds, its best-on-val checkpoint is
evaluated on the test split, and the script writes ``ablation.md`` (a Table V-style table: Pr@0.5,
0.6, 0.7, 0.8, 0.9, oIoU and mIoU as mean +/- standard deviation over the seeds, plus the
uncertainty AUROC and the mIoU per tag when the runs report them) and ``ablation.json`` (every
run's test metrics and the table's numbers).

Without ``--config`` it runs the miniature on the synthetic benchmark (the ``tiny`` preset, 250
steps of 16 per run). With ``--config`` it runs the given recipe, e.g. the paper's on a real
dataset; the rows are the files ``rows/{base,ugf,udlr,full}``, applied over it. Every
option of ``examples/train.py`` is accepted and applies to every run, except ``--output-dir``,
the folder that holds one run folder per row and seed and the table.

Examples::

    python examples/ablation.py                              # 4 rows x 3 seeds, synthetic
    python examples/ablation.py --seeds 0 1 2 --max-steps 250 --output-dir runs/ablation
    python examples/ablation.py --rows Base Full --seeds 0   # a quick look
    python examples/ablation.py --config rrsisd --data-root /data/rrsisd \\
        --vision-weights /weights/convnext_base.safetensors --text-weights /weights/bert-base-uncased \\
        --seeds 0 1 2                                        # Table V on RRSIS-D: runs/ablation-rrsisd
    torchrun --nproc_per_node=8 examples/ablation.py --config refsegrs --data-root ...

Finished runs are reused (their metrics.json is read back; a finished run trained with other
settings is an error, not reused), so an interrupted ablation continues where it stopped when run
again with the same arguments: an unfinished run resumes from its resumable checkpoint when it has
one, and starts again in its folder otherwise.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uncertainty_rrsis.training import (
    RESUME_MAY_CHANGE,
    DistEnv,
    RunFolderError,
    SettingsError,
    TrainConfig,
    broadcast_from_main,
    build_arg_parser,
    build_trainer,
    config_files,
    environment_info,
    init_distributed,
    load_config_file,
    main_guard,
    merge_settings,
)
from uncertainty_rrsis.training.run_folder import format_changes, settings_changes

#: Table V's rows and the bundled configs that set them (``--config rows/<name>``).
ROWS = {"Base": "base", "+UGF": "ugf", "+UDLR": "udlr", "Full": "full"}
#: Table V's columns: the precision at five IoU thresholds, oIoU and mIoU.
COLUMNS = ["Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "oIoU", "mIoU"]
#: Columns added when the runs report them: the AUROC of U^p for error pixels, the mIoU per tag.
UNCERTAINTY = "unc/AUROC"
TAGS = {"thin": "thin=true", "tiny": "tiny=true", "dense": "dense=true"}
#: The synthetic miniature's settings (used without --config; flags win over them).
SYNTHETIC = {"max_steps": 250, "epochs": 1000, "batch_size": 16, "panels": 0,
             "tensorboard": False, "checkpoint_every": 10**9, "progress": False}


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


def row_settings(row: str) -> dict[str, Any]:
    """The settings of a Table V row, read from the bundled config ``rows/<name>``."""
    return load_config_file(f"rows/{ROWS[row]}")


def run_folder(out: Path, row: str, seed: int) -> Path:
    return out / f"{row.replace('+', 'plus_')}-seed{seed}"


#: Every row without the risk heads (beyond the paper; Base, which has no uncertainty map, cannot have
#: them), so the rows differ by the paper's modules only.
PAPER_MODULES_ONLY = {"model": {"risk_head": False, "pixel_risk_head": False}}


def run_config(base: dict[str, Any], row: str, seed: int, out: Path) -> TrainConfig:
    """The settings of one run: ``base`` without the risk heads, with the row's model switches and the
    seed, in its own folder."""
    folder = run_folder(out, row, seed)
    settings = merge_settings(base, PAPER_MODULES_ONLY, row_settings(row), {"seed": seed, "output_dir": str(folder)})
    return TrainConfig.from_dict(settings)


def finished(cfg: TrainConfig, split: str) -> dict | None:
    """The results of the finished run in ``cfg``'s folder (its metrics.json), None when it has not finished.

    Raises:
        RunFolderError: the folder holds a finished run trained with other settings.
    """
    folder = Path(cfg.output_dir)
    done = folder / "metrics.json"
    if not done.is_file():
        return None
    report = json.loads(done.read_text())
    changes = settings_changes(report.get("train_config", {}), cfg.to_dict(), saved_model=None, new_model={},
                               free=RESUME_MAY_CHANGE)
    if changes:
        raise RunFolderError(f"{folder} holds a finished run with other settings:\n{format_changes(changes)}\n"
                             "Its results would not belong to this ablation: give the ablation its own --output-dir, "
                             "or delete that run folder.")
    return report["results"][split]


def run_one(cfg: TrainConfig, split: str, env: DistEnv) -> dict:
    """Train and evaluate one run, or read back its results when it has finished (rank 0 reads the folder)."""
    outcome: Any = None
    if env.is_main:
        try:
            outcome = {"results": finished(cfg, split), "started": Path(cfg.output_dir).is_dir()}
        except RunFolderError as err:
            outcome = {"error": str(err)}
    outcome = broadcast_from_main(env, outcome)
    if "error" in outcome:
        raise RunFolderError(outcome["error"])
    if outcome["results"] is not None:
        return outcome["results"]
    # an unfinished run in its folder: continue it
    return build_trainer(cfg.replace(resume=outcome["started"]), env=env).fit()[split]


def summary(results: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per row and column: the mean, standard deviation and count over seeds (fractions, as measured)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, runs in results.items():
        columns = {c: [r[c] for r in runs if c in r] for c in [*COLUMNS, UNCERTAINTY]}
        for name, tag in TAGS.items():
            columns[f"mIoU {name}"] = [r["breakdown"][tag]["mIoU"] for r in runs if tag in r.get("breakdown", {})]
        out[row] = {c: dict(zip(("mean", "std"), mean_std(v), strict=True), n=len(v)) for c, v in columns.items() if v}
    return out


def table(results: dict[str, list[dict]]) -> str:
    """The Markdown table: Table V's columns, then U AUROC and the per-tag mIoU when any run has them."""
    runs = [r for rs in results.values() for r in rs]
    columns = list(COLUMNS)
    if any(UNCERTAINTY in r for r in runs):
        columns.append(UNCERTAINTY)
    tags = {name: tag for name, tag in TAGS.items() if any(tag in r.get("breakdown", {}) for r in runs)}
    lines = ["| row | " + " | ".join(c.replace("unc/", "U ") for c in columns) + "".join(
        f" | mIoU {name}" for name in tags) + " |", "| --- |" + " ---: |" * (len(columns) + len(tags))]
    for row, row_runs in results.items():
        cells = [cell([r[c] for r in row_runs if c in r], scale=1.0 if c == UNCERTAINTY else 100.0,
                      digits=3 if c == UNCERTAINTY else 1) for c in columns]
        cells += [cell([r["breakdown"][tag]["mIoU"] for r in row_runs if tag in r.get("breakdown", {})])
                  for tag in tags.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes to the package), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "uncertainty_rrsis", "examples"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def heading(cfg: TrainConfig, split: str, seeds: list[int], results: dict[str, list[dict]]) -> str:
    what = "Synthetic" if cfg.dataset == "synthetic" else cfg.dataset
    shared = {k: v for k, v in (cfg.model or {}).items() if k not in ("use_fusion", "use_refinement")}  # not the row's
    budget = f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    text = (f"{what} {split} split, best-on-val checkpoint (val {cfg.select_metric}), {budget} x batch "
            f"{cfg.batch_size}, preset {cfg.preset}"
            + (f" with model settings {json.dumps(shared, sort_keys=True)}" if shared else "")
            + f", seeds {seeds}; mean ± std over seeds; Pr/IoU in %")
    if any(UNCERTAINTY in r for rs in results.values() for r in rs):
        text += ", U AUROC of U^p for error pixels"
    env = environment_info()
    text += (f". Commit {git_commit() or 'unknown'}; {env['device_name']}, {env['cpu_threads']} torch thread(s), "
             f"torch {env['torch']}")
    return text + "."


def build_parser():
    parser = build_arg_parser(__doc__)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="ablation rows to train")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (at least 3 for a spread)")
    for action in parser._actions:
        if action.dest == "output_dir":  # the one option whose meaning differs from examples/train.py's
            action.help = ("the ablation's folder: one run folder per row and seed, ablation.md and ablation.json "
                           "(default: runs/ablation, with --config runs/ablation-<config names>)")
        elif action.dest in SYNTHETIC and action.help:
            value = SYNTHETIC[action.dest]
            action.help += f"; without --config the ablation's miniature uses {value}"
    return parser


@dataclass
class Plan:
    """What an invocation runs: the folder, the split scored, and one config per row and seed."""

    out: Path
    split: str
    files: list[str]
    seeds: list[int]
    configs: dict[str, list[TrainConfig]]

    @property
    def first(self) -> TrainConfig:
        return next(iter(self.configs.values()))[0]


def plan(argv: list[str] | None = None) -> Plan:
    """Parse the command line into a :class:`Plan` (exits with the usage line on settings that cannot work)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    files = config_files(args)
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "rows", "seeds")}
    for name in ("resume", "overwrite", "resume_with_changes"):
        if name in flags:
            parser.error(f"--{name.replace('_', '-')}: the ablation reuses finished runs and resumes unfinished ones "
                         "by itself; to train a run again, delete its folder")
    default_out = "runs/ablation-" + "-".join(Path(f).stem for f in files) if files else "runs/ablation"
    out = Path(flags.pop("output_dir", None) or default_out)
    try:
        base = merge_settings(*([load_config_file(f) for f in files] if files else [SYNTHETIC]), flags)
        configs = {row: [run_config(base, row, seed, out) for seed in args.seeds] for row in args.rows}
        for row_configs in configs.values():
            for cfg in row_configs:
                cfg.validate()
    except (ValueError, FileNotFoundError) as err:  # settings that cannot work: say which, no traceback
        parser.error(str(err))
    first = configs[args.rows[0]][0]
    split = next((s.strip() for s in first.eval_splits.split(",") if s.strip()), None)
    if split is None:
        parser.error("--eval-splits names no split: the ablation scores the best checkpoint of each run on one "
                     "(test by default)")
    return Plan(out=out, split=split, files=files, seeds=list(args.seeds), configs=configs)


def main(argv: list[str] | None = None) -> str:
    todo = plan(argv)

    def body() -> str:
        env = init_distributed(device=todo.first.device)
        results: dict[str, list[dict]] = {}
        try:
            for row, row_configs in todo.configs.items():
                results[row] = [run_one(cfg, todo.split, env) for cfg in row_configs]
        except (RunFolderError, SettingsError) as err:  # in use / holds another run / settings: say so
            raise SystemExit(f"error: {err}") from None
        text = heading(todo.first, todo.split, todo.seeds, results) + "\n\n" + table(results) + "\n"
        if env.is_main:
            todo.out.mkdir(parents=True, exist_ok=True)
            (todo.out / "ablation.md").write_text(text)
            payload = {"commit": git_commit(), "environment": environment_info(), "configs": todo.files,
                       "split": todo.split, "seeds": todo.seeds, "rows": list(todo.configs),
                       "settings": {row: [cfg.to_dict() for cfg in cs] for row, cs in todo.configs.items()},
                       "results": results, "summary": summary(results)}
            (todo.out / "ablation.json").write_text(json.dumps(payload, indent=2, default=str))
            print(text)
        return text

    return main_guard(body)


if __name__ == "__main__":
    main(sys.argv[1:])
