"""Segment images from one or more sentences with a trained CroBIM-U checkpoint.

Writes, for every (image, sentence) pair, the mask (``*_mask.png``, 0 / 255 at the image's size),
the uncertainty heat map ``U^p`` (``*_uncertainty.png``: bright where the model expects to be wrong)
and a panel (``*_panel.png``: image, prediction, ``U^p``, UDLR's mask ``M``), and prints the share
of the image the mask covers and the mean uncertainty inside and outside it.

Output names are ``<image stem>__<sentence>__<hash>_<kind>.png``: readable slugs of the image's
file name and of the sentence, and the first 10 hex digits of the SHA-256 of the image's absolute
path and the exact sentence. Two images of the same name in different folders, sentences that
differ only in case or punctuation, and sentences in any script therefore get files of their own,
and the same pair gets the same names in every run. ``predictions.json`` and ``predictions.csv``
list every pair with its files; a pair given twice is predicted once.

Examples::

    python examples/predict.py runs/default/checkpoints/best --image harbour.png \\
        --sentence "the small white ship at the left end of the pier" --sentence "the pier"
    python examples/predict.py CKPT --image a.png --image b.png --sentence "the road" --output-dir out/
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import unicodedata
from pathlib import Path

import torch

from uncertainty_rrsis.inference import ReferringSegmenter

COLUMNS = ["image", "sentence", "mask", "uncertainty", "panel", "mask_share",
           "mean_uncertainty_in_mask", "mean_uncertainty_outside"]


def _slug(text: str, limit: int = 40, fallback: str = "sentence") -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")[:limit].strip("_") or fallback


def output_stem(image: str | Path, sentence: str) -> str:
    """``<image stem>__<sentence slug>__<hash>``: the hash covers the image's absolute path and the exact
    sentence, so every (image, sentence) pair has its own, stable name."""
    key = f"{Path(image).resolve()}\0{sentence}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).hexdigest()[:10]
    return f"{_slug(Path(image).stem, 30, 'image')}__{_slug(sentence)}__{digest}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + config.json + tokenizer/)")
    parser.add_argument("--image", action="append", required=True,
                        help="image file; repeat for several images (every sentence is applied to every image)")
    parser.add_argument("--sentence", action="append", required=True, help="referring expression; repeatable")
    parser.add_argument("--output-dir", default="predictions",
                        help="where the PNGs, predictions.json and predictions.csv go")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    args = parser.parse_args(argv)

    pairs, stems, seen = [], [], set()
    for image in args.image:
        for sentence in args.sentence:
            key = (str(Path(image).resolve()), sentence)
            if key in seen:  # the same pair twice: one prediction, one row
                continue
            seen.add(key)
            stem = output_stem(image, sentence)
            while stem in stems:  # a hash collision would need another name; never share files
                stem += "_"
            pairs.append((image, sentence))
            stems.append(stem)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    segmenter = ReferringSegmenter.from_pretrained(args.checkpoint, device=device, amp=args.amp,
                                                   batch_size=args.batch_size)
    predictions = segmenter([p[0] for p in pairs], [p[1] for p in pairs])
    out = Path(args.output_dir)
    summary = []
    for (image, sentence), stem, pred in zip(pairs, stems, predictions, strict=True):
        paths = pred.save(out / stem)
        row = {"image": str(image), "sentence": sentence, "mask": str(paths["mask"]),
               "uncertainty": str(paths["uncertainty"]) if "uncertainty" in paths else None,
               "panel": str(paths["panel"]), "mask_share": float(pred.mask.float().mean()),
               "mean_uncertainty_in_mask": None, "mean_uncertainty_outside": None}
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
    (out / "predictions.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    with (out / "predictions.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in summary)
    return summary


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, TypeError) as err:
        sys.exit(f"predict.py: {err}")
