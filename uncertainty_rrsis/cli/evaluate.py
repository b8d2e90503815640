"""Evaluate a CroBIM-U checkpoint with the field's protocol.

Prints oIoU / mIoU / Pr@0.5-0.9; the uncertainty metrics next to their free baselines (error
pixels: AUROC / AUPRC / errors caught in the 10 % most uncertain pixels for U^p, for the margin of
the model's own logits and for that margin averaged over U's grid; failed samples (IoU < 0.5):
AUROC / AUPRC / AURC of the mean U^p over the predicted mask, over the image, and of the mean
margin); and, when the samples carry tags (synthetic), mIoU and failure detection per tag. Writes
``<output_dir>/eval_<split>.json`` and panels.
Works as a plain process or under ``torchrun`` (each sample counted once across ranks).

Examples::

    uncertainty-rrsis evaluate runs/default/checkpoints/best
    uncertainty-rrsis evaluate runs/default/checkpoints/best --split val --original-size
    torchrun --nproc_per_node=4 -m uncertainty_rrsis.cli evaluate CKPT --dataset rrsisd --data-root /data/rrsisd
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data import CHECK_RECORD_NAME, DatasetError
from ..models import CroBIMU
from ..training import (
    TrainConfig,
    autocast_dtype,
    build_dataset,
    checkpoint_settings,
    environment_info,
    evaluate,
    evaluation_loader,
    format_breakdown,
    format_metrics,
    format_reliability,
    init_distributed,
    load_tokenizer,
    main_guard,
    merge_settings,
    per_rank_batch,
    prepare_data_root,
    resolve_num_workers,
    resolve_precision,
    save_panels,
    seed_everything,
    write_metrics,
)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + config.json [+ tokenizer/])")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate")
    parser.add_argument("--dataset", default=None, help="dataset (default: the one the checkpoint was trained on)")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the training run's)")
    parser.add_argument("--original-size", action="store_true", help="score at each image's original size")
    parser.add_argument("--text-masked", action="store_true", help="also evaluate with every sentence blanked")
    parser.add_argument("--batch-size", type=int, default=None, help="TOTAL evaluation batch over all ranks")
    parser.add_argument("--panels", type=int, default=8, help="samples drawn as PNG panels")
    parser.add_argument("--output-dir", default=None, help="where results go (default: next to the checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--tta", action="store_true",
                        help="also score the test-time-augmentation baseline (the model at 0.75x and 1.25x the input "
                             "size; costs two more forward passes)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    return main_guard(lambda: run(args))


def training_settings(folder: Path, args: argparse.Namespace) -> TrainConfig:
    """The data settings of the run that wrote the checkpoint, with the flags over them."""
    flags: dict = {"device": args.device, "progress": not args.no_progress, "panels": args.panels,
                   "output_dir": args.output_dir or str(folder.parent.parent / "eval")}
    if args.dataset:
        flags["dataset"] = args.dataset
    if args.data_root:
        flags["data_root"] = args.data_root
    if args.batch_size:
        flags.update(batch_size=args.batch_size, grad_accumulation=1)
    cfg = TrainConfig.from_dict(merge_settings(checkpoint_settings(folder), flags))
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> dict:
    folder = Path(args.checkpoint)
    if not (folder / "config.json").is_file() and not (folder / "checkpoints").is_dir():
        raise SystemExit(f"{folder} is not a checkpoint folder: expected config.json and model.safetensors in it")
    try:
        cfg = training_settings(folder, args)
    except ValueError as err:
        raise SystemExit(f"uncertainty-rrsis evaluate: {err}") from None
    env = init_distributed(device=cfg.device)
    seed_everything(cfg.seed)
    try:
        model = CroBIMU.from_pretrained(folder, device=env.device)
    except (RuntimeError, ValueError, FileNotFoundError) as err:  # a run folder, a broken checkpoint: it says which
        raise SystemExit(f"uncertainty-rrsis evaluate: cannot load the checkpoint {folder}:\n{err}") from None
    tokenizer_dir = folder / "tokenizer"
    tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir.is_dir() else model.config.text.name)
    root = prepare_data_root(cfg, image_size=model.config.image_size, env=env)
    try:
        dataset = build_dataset(cfg.dataset, root, args.split, tokenizer=tokenizer, model_config=model.config,
                                return_orig_mask=args.original_size,
                                check_record=Path(cfg.cache_dir) / CHECK_RECORD_NAME)
    except DatasetError as err:  # an empty split, a missing folder, bad annotations: the reader says which
        raise SystemExit(f"uncertainty-rrsis evaluate: cannot read the {args.split} split of the {cfg.dataset} data:\n"
                         f"{err}") from None
    if len(dataset) == 0:
        raise SystemExit(f"the {args.split} split of the {cfg.dataset} data under {root} is empty (0 samples): there "
                         "is nothing to evaluate. Check --data-root and --split.")
    workers = resolve_num_workers(cfg.num_workers, device=env.device)
    batch = per_rank_batch(cfg.batch_size, env.world_size, cfg.grad_accumulation)
    loader = evaluation_loader(dataset, batch_size=batch,
                               rank=env.rank, world_size=env.world_size, num_workers=workers)
    dtype = autocast_dtype(resolve_precision(cfg.precision, device=env.device, fp16_fallback=True))
    options: dict[str, Any] = {"device": env.device, "progress": cfg.progress and env.is_main,
                               "description": f"eval {args.split}", "autocast_dtype": dtype}
    results = {args.split: evaluate(model, loader, at_original_size=args.original_size,
                                    tta_scales=(0.75, 1.25) if args.tta else (), **options)}
    if args.text_masked:
        results[f"{args.split}/text_masked"] = evaluate(model, loader, blank_text=True, tokenizer=tokenizer,
                                                        uncertainty=False, **options)
    if env.is_main:
        out = Path(cfg.output_dir)
        for name, metrics in results.items():
            print(format_metrics(metrics, title=f"{name} ({'original size' if args.original_size else 'input size'})"))
            if metrics.get("unc_reliability"):
                print("predicted IoU against the actual one:\n" + format_reliability(metrics["unc_reliability"]))
            if metrics.get("breakdown"):
                print(format_breakdown(metrics))
        payload = {"checkpoint": str(folder), "split": args.split, "original_size": args.original_size,
                   "results": results, "environment": environment_info()}
        write_metrics(out / f"eval_{args.split}.json", payload)
        if args.panels:
            save_panels(model, dataset, out / "panels", split=args.split, count=args.panels, device=env.device,
                        autocast_dtype=options["autocast_dtype"])
    return results

