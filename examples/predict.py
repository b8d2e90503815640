"""Segment an image from one or more sentences with a trained CroBIM-U checkpoint.

Writes, for every sentence, the mask (``*_mask.png``, 0 / 255 at the image's size), the
uncertainty heat map ``U^p`` (``*_uncertainty.png``: bright where the model expects to be wrong)
and a panel (``*_panel.png``: image, prediction, ``U^p``, UDLR's mask ``M``), and prints the share
of the image the mask covers and the mean uncertainty inside and outside it.

Examples::

    python examples/predict.py runs/default/checkpoints/best --image harbour.png \\
        --sentence "the small white ship at the left end of the pier" --sentence "the pier"
    python examples/predict.py CKPT --image a.png --image b.png --sentence "the road" --output-dir out/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from uncertainty_rrsis.inference import ReferringSegmenter


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "sentence"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + config.json + tokenizer/)")
    parser.add_argument("--image", action="append", required=True,
                        help="image file; repeat for several images (every sentence is applied to every image)")
    parser.add_argument("--sentence", action="append", required=True, help="referring expression; repeatable")
    parser.add_argument("--output-dir", default="predictions", help="where the PNGs and predictions.json go")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    args = parser.parse_args(argv)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    segmenter = ReferringSegmenter.from_pretrained(args.checkpoint, device=device, amp=args.amp,
                                                   batch_size=args.batch_size)
    pairs = [(image, sentence) for image in args.image for sentence in args.sentence]
    predictions = segmenter([p[0] for p in pairs], [p[1] for p in pairs])
    out = Path(args.output_dir)
    summary = []
    for (image, sentence), pred in zip(pairs, predictions, strict=True):
        paths = pred.save(out / f"{Path(image).stem}__{_slug(sentence)}")
        row = {"image": str(image), "sentence": sentence, "mask_share": float(pred.mask.float().mean()),
               **{k: str(v) for k, v in paths.items()}}
        if pred.uncertainty is not None:
            inside = pred.uncertainty[pred.mask]
            outside = pred.uncertainty[~pred.mask]
            row["mean_uncertainty_in_mask"] = float(inside.mean()) if inside.numel() else None
            row["mean_uncertainty_outside"] = float(outside.mean()) if outside.numel() else None
        summary.append(row)
        unc = ""
        if pred.uncertainty is not None:
            unc = f", mean U^p {float(pred.uncertainty.mean()):.3f}"
        print(f"{Path(image).name} | {sentence!r}: mask covers {100 * row['mask_share']:.2f}% of the image{unc} "
              f"-> {paths['panel']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, TypeError) as err:
        sys.exit(f"predict.py: {err}")
