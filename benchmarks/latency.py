"""What the CroBIM-U uncertainty modules cost: latency, throughput, memory, parameters, FLOPs.

Run from the repository root (the package is imported from source)::

    python -m benchmarks.latency --device cpu --preset paper --batch-sizes 1 --image-sizes 480
    python -m benchmarks.latency --device cuda --dtype bf16,fp32 --batch-sizes 8,1,32 \\
        --image-sizes 480,320,640,800 --channels-last --compile --time-budget 330

This module is the command line (``parse_args``, ``main``). The run itself is
``benchmarks._runner.Runner`` (models, inputs, timing a table of variants, writing the results), with
names and helpers from ``benchmarks._common``; each of the ``--sections`` lives in
``benchmarks/sections/<name>.py``:

``syncs``          host-device synchronisations and ops launched, Base and Full
``modules``        RUS, UGF, UDLR and OnlineErrorLoss alone, every image size and dtype
``rows``           the ablation rows (Base, +UGF, +UDLR, Full) at the main setting, inference and training step
``sweep``          Base and Full inference over ``--image-sizes``; exponents of cost vs pixel count
``batch``          Base and Full at the other ``--batch-sizes``, inference and training step
``channels_last``  Base and Full with ``channels_last`` model and input (``--channels-last``)
``compile``        torch.compile of Full and Base vs eager, timed interleaved (``--compile``)
``cudagraphs``     the compile section in ``mode="reduce-overhead"``
``training``       training throughput and the largest batch that fits, eager and compiled
``decoders``       Base vs Full around LAVT's SimpleDecoding

As each section finishes, the run's ``<out>/<tag>.json`` and ``<out>/<tag>.md`` are rewritten.

Latency: median and spread (p25-p75, p10-p90) over ``--repeats`` calls after ``--warmup``;
variants of one table are timed interleaved (see ``benchmarks/_measure.py``). FLOPs: see
``benchmarks/_flops.py`` (2 FLOPs per multiply-add). Parameters: ``CroBIMU.num_parameters()``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks._common import MODULE_PATHS, VARIANTS, build_config, fit_exponent  # noqa: F401 - re-exported
from benchmarks._runner import Runner
from benchmarks.sections import SECTIONS

__all__ = ["SECTIONS", "VARIANTS", "main", "parse_args"]


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
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (eager: graph-break check only)")
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
                   help="cap on the timed phase of one table (fewer repeats, at least 3; default 4 on cuda, "
                        "none on cpu)")
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
