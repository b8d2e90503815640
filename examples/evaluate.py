"""Evaluate a CroBIM-U checkpoint with the field's protocol.

Prints oIoU / mIoU / Pr@0.5-0.9, the per-tag breakdown when the samples carry tags (synthetic),
and the uncertainty metrics (AUROC / AUPRC of U^p for error pixels, errors caught in the top
5/10/20 % most uncertain pixels); writes ``<output_dir>/eval_<split>.json`` and panels.
Works as a plain process or under ``torchrun`` (each sample counted once across ranks).

Examples::

    python examples/evaluate.py runs/default/checkpoints/best
    python examples/evaluate.py runs/default/checkpoints/best --split val --original-size
    torchrun --nproc_per_node=4 examples/evaluate.py CKPT --dataset rrsisd --data-root /data/rrsisd
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uncertainty_rrsis.training import TrainConfig, Trainer, format_metrics
from uncertainty_rrsis.training.checkpoint import atomic_write_text
from uncertainty_rrsis.training.loop import environment_info, main_guard


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    return main_guard(lambda: run(args))


def run(args: argparse.Namespace) -> dict:
    from uncertainty_rrsis.models import CroBIMU

    folder = Path(args.checkpoint)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is not a checkpoint folder: expected config.json and model.safetensors in it")
    train_cfg: dict = {}
    state = folder / "trainer_state.json"
    if state.is_file():
        train_cfg = json.loads(state.read_text()).get("train_config", {})
    cfg = TrainConfig.from_dict({k: v for k, v in train_cfg.items() if k in TrainConfig.__dataclass_fields__})
    cfg.resume, cfg.device, cfg.progress = False, args.device, not args.no_progress
    cfg.panels = args.panels
    if args.dataset:
        cfg.dataset = args.dataset
    if args.data_root:
        cfg.data_root = args.data_root
    if args.batch_size:
        cfg.batch_size, cfg.grad_accumulation = args.batch_size, 1
    cfg.output_dir = args.output_dir or str(folder.parent.parent / "eval")
    model_config = CroBIMU.config_from_pretrained(folder)
    tokenizer_dir = folder / "tokenizer"
    if tokenizer_dir.is_dir():
        model_config = model_config.replace(text={"name": str(tokenizer_dir)})
    trainer = Trainer(cfg, model_config=model_config)
    trainer.load_weights(folder)
    results = {args.split: trainer.evaluate(args.split, at_original_size=args.original_size)}
    if args.text_masked:
        results[f"{args.split}/text_masked"] = trainer.evaluate(args.split, blank_text=True, uncertainty=False)
    if trainer.env.is_main:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, metrics in results.items():
            print(format_metrics(metrics, title=f"{name} ({'original size' if args.original_size else 'input size'})"))
            for group, values in sorted(metrics.get("breakdown", {}).items()):
                print(f"  {group:28s} mIoU {100 * values['mIoU']:6.2f}  oIoU {100 * values['oIoU']:6.2f}  "
                      f"n={int(values['count'])}")
        payload = {"checkpoint": str(folder), "split": args.split, "original_size": args.original_size,
                   "results": results, "environment": environment_info()}
        atomic_write_text(out / f"eval_{args.split}.json", json.dumps(payload, indent=2, default=str))
        if args.panels:
            trainer.save_panels(args.split, args.panels)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
