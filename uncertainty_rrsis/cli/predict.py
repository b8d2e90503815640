"""Segment images from one or more sentences with a trained CroBIM-U checkpoint.

Writes, for every (image, sentence) pair, the mask, the uncertainty map ``U^p`` (bright where the
model expects to be wrong) and a panel (``*_panel.png``: image, prediction, ``U^p``, UDLR's mask
``M``), and prints the share of the image the mask covers and the mean uncertainty. Pictures (PNG,
JPEG, TIFF) give ``*_mask.png`` (0 / 255 at the image's size) and ``*_uncertainty.png`` (heat map);
GeoTIFFs give ``*_mask.tif`` (uint8 0 / 255) and ``*_uncertainty.tif`` (float32 ``U^p``, nodata
NaN) with the input's CRS, geotransform and size (extra ``geo``: rasterio); they are read by
windows and their outputs written band by band, so a scene larger than memory works (with a
progress bar over the windows and the rows written).

Inputs:

* ``--image`` (repeatable) with ``--sentence`` (repeatable): every sentence on every image. An
  ``--image`` may be a folder: its PNG, JPEG, TIFF and GeoTIFF files (not its subfolders), sorted
  by name.
* ``--pairs FILE``: a CSV file with the columns ``image`` and ``sentence``, or a JSONL file of
  ``{"image": ..., "sentence": ...}`` lines; relative image paths are relative to the file's folder.

Rasters: ``--bands 3,2,1`` (1-based, as in GDAL), ``--stretch`` (``percentile:2,98``, the default
for data that is not 8-bit, or ``minmax:LO,HI`` / ``minmax:LO1,HI1/LO2,HI2/LO3,HI3``),
``--window col_off,row_off,width,height``. Scenes larger than the model's input:
``--coarse-to-fine`` (a whole-scene pass finds the referent, windows at native resolution refine
it; ``--window-size``, ``--overlap``, ``--combine``).

Output names are ``<image stem>__<sentence>__<hash>_<kind>.<ext>``: readable slugs of the image's
file name and of the sentence, and the first 10 hex digits of the SHA-256 of the image's absolute
path and the exact sentence. Two images of the same name in different folders, sentences that
differ only in case or punctuation, and sentences in any script therefore get files of their own,
and the same pair gets the same names in every run. ``predictions.json`` and ``predictions.csv``
list every pair with its files, the mask's area (pixels and share of the valid pixels), how much
to trust the answer, the mean uncertainty and, for rasters, the stretch that was applied; a pair
given twice is predicted once. How much to trust each answer: with a model trained with the risk
head, its ``predicted_iou`` and ``failure_probability`` (also printed and written on the panel);
``mean_margin`` (the free score every model has) always; ``risk_score`` is the failure probability
when there is one, else the mean margin. ``--sort-by risk`` lists the answers most likely wrong
first (``predictions.csv`` / ``.json`` / ``.jsonl``), and ``--flag-above P`` marks those whose risk
score exceeds ``P`` in the ``flagged`` column: the answers to check by hand. With ``--keep-going``
an image that cannot be read is reported in its rows' ``error`` column and the others go on (exit
status 1 at the end).

Examples::

    uncertainty-rrsis predict runs/default/checkpoints/best --image harbour.png \\
        --sentence "the small white ship at the left end of the pier" --sentence "the pier"
    uncertainty-rrsis predict CKPT --image scenes/ --sentence "the largest storage tank" --output-dir out/
    uncertainty-rrsis predict CKPT --pairs pairs.csv --bands 3,2,1 --stretch percentile:2,98 --coarse-to-fine
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data import DEFAULT_MAX_PIXELS
from ..geo import is_geotiff
from ..inference import ReferringPrediction, ReferringSegmenter
from ..scenes import COMBINE_MODES, SceneResult, SceneSegmenter

COLUMNS = ["image", "sentence", "mask", "uncertainty", "panel", "width", "height", "mask_pixels", "mask_share",
           "predicted_iou", "failure_probability", "mean_margin", "risk_score", "flagged",
           "mean_uncertainty", "mean_uncertainty_in_mask", "mean_uncertainty_outside", "georeferenced", "stretch",
           "mode", "windows", "error"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _slug(text: str, limit: int = 40, fallback: str = "sentence") -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")[:limit].strip("_") or fallback


def output_stem(image: str | Path, sentence: str) -> str:
    """``<image stem>__<sentence slug>__<hash>``: the hash covers the image's absolute path and the exact
    sentence, so every (image, sentence) pair has its own, stable name."""
    key = f"{Path(image).resolve()}\0{sentence}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).hexdigest()[:10]
    return f"{_slug(Path(image).stem, 30, 'image')}__{_slug(sentence)}__{digest}"


def expand_images(images: list[str]) -> list[str]:
    """Files as given; a folder becomes its image files (``IMAGE_SUFFIXES``, any case), sorted by name."""
    out: list[str] = []
    for image in images:
        path = Path(image)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"the folder {path} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(image)
    return out


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(image, sentence) pairs from a CSV file (columns ``image``, ``sentence``) or a JSONL file; relative
    image paths are taken relative to the file's folder. Errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    pairs: list[tuple[str, str]] = []

    def add(image: Any, sentence: Any, line: int) -> None:
        if not isinstance(image, str) or not image.strip():
            raise ValueError(f"{path}, line {line}: the image is missing")
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"{path}, line {line}: the sentence for {image} is empty; a referring expression "
                             "is needed")
        image_path = Path(image)
        pairs.append((str(image_path if image_path.is_absolute() else path.parent / image_path), sentence))

    if path.suffix.lower() == ".jsonl":
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except ValueError as err:
                raise ValueError(f"{path}, line {number}: not a JSON object ({err})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}, line {number}: expected an object with \"image\" and \"sentence\"")
            add(item.get("image"), item.get("sentence"), number)
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "sentence"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: the header must name the columns image and sentence; "
                                 f"{' and '.join(sorted(missing))} missing (header: {reader.fieldnames})")
            for row in reader:
                add(row.get("image"), row.get("sentence"), reader.line_num)
    else:
        raise ValueError(f"{path}: a pairs file is .csv (columns image, sentence) or .jsonl")
    if not pairs:
        raise ValueError(f"{path} lists no (image, sentence) pair")
    return pairs


def _progress(total: int, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, unit="pair", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass
    return None


def _row(image: str, sentence: str, pred: ReferringPrediction | SceneResult, paths: dict[str, Path]
         ) -> dict[str, Any]:
    details = pred.details or {}
    stretch = None
    if pred.raster is not None:  # what became 0 and 255 in each channel: the stretch can be repeated exactly
        info = pred.raster
        pairs = zip(info.bands, info.ranges or [], strict=False)  # no ranges: 8-bit data taken as it is
        ranges = "; ".join(f"band {b}: {lo:g} to {hi:g}" for b, (lo, hi) in pairs)
        stretch = f"{info.stretch} (bands {','.join(map(str, info.bands))}{'; ' + ranges if ranges else ''})"
    figures = pred.summary()
    return {"image": str(image), "sentence": sentence, "mask": str(paths["mask"]),
            "uncertainty": str(paths["uncertainty"]) if "uncertainty" in paths else None,
            "panel": str(paths["panel"]), "width": figures["width"], "height": figures["height"],
            "mask_pixels": figures["mask_pixels"], "mask_share": figures["mask_share"],
            "predicted_iou": figures["predicted_iou"], "failure_probability": figures["failure_probability"],
            "mean_margin": figures["mean_margin"], "risk_score": figures["risk_score"], "flagged": False,
            "mean_uncertainty": figures["mean_uncertainty"],
            "mean_uncertainty_in_mask": figures["mean_uncertainty_in_mask"],
            "mean_uncertainty_outside": figures["mean_uncertainty_outside"],
            "georeferenced": bool(pred.raster is not None and pred.raster.crs), "stretch": stretch,
            "mode": details.get("mode", "single"), "windows": details.get("windows", 0), "error": None}


def _groups(pairs: list[tuple[str, str]], size: int) -> Iterator[tuple[str, list[int]]]:
    """Consecutive pairs of one image, at most ``size`` at a time: (image, pair indices)."""
    start = 0
    while start < len(pairs):
        stop = start + 1
        while stop < len(pairs) and stop - start < size and pairs[stop][0] == pairs[start][0]:
            stop += 1
        yield pairs[start][0], list(range(start, stop))
        start = stop


def main(argv: list[str] | None = None, *, prog: str | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + config.json + tokenizer/)")
    parser.add_argument("--image", action="append", default=[],
                        help="image file or folder of images; repeatable (every sentence is applied to every image)")
    parser.add_argument("--sentence", action="append", default=[], help="referring expression; repeatable")
    parser.add_argument("--pairs", help="CSV (columns image, sentence) or JSONL file of (image, sentence) pairs")
    parser.add_argument("--output-dir", default="predictions",
                        help="where the outputs, predictions.json and predictions.csv go")
    parser.add_argument("--output-format", choices=("auto", "png", "geotiff"), default="auto",
                        help="auto: GeoTIFF for rasters read with rasterio, PNG for pictures")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs (or windows) per forward pass")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse a picture that would decode to more pixels than this (default "
                             f"{DEFAULT_MAX_PIXELS:,}); 0: no limit")
    parser.add_argument("--bands", help="raster bands for red, green, blue (1-based, e.g. 3,2,1), or one for grey")
    parser.add_argument("--stretch", help="auto (default), none, percentile[:LOW,HIGH] or minmax:LO,HI[/LO,HI/LO,HI]")
    parser.add_argument("--window", help="read only this pixel window of each raster: col_off,row_off,width,height")
    parser.add_argument("--coarse-to-fine", action="store_true",
                        help="scenes larger than a window: whole-scene pass, then windows at native resolution")
    parser.add_argument("--window-size", type=int,
                        help="coarse to fine: native pixels per window (default: half the scene's longer side, at "
                             "least the model's input side; the input side gives native resolution)")
    parser.add_argument("--overlap", type=float, default=0.5, help="coarse to fine: window overlap (default 0.5)")
    parser.add_argument("--combine", choices=COMBINE_MODES, default="gate",
                        help="coarse to fine: how windows and the whole-scene pass combine (default gate)")
    parser.add_argument("--keep-going", action="store_true",
                        help="record an image that cannot be read in its rows' error column and go on")
    parser.add_argument("--sort-by", choices=("input", "risk"), default="input",
                        help="order of the rows in predictions.csv / .json / .jsonl: as given, or the answers most "
                             "likely wrong first (by risk_score)")
    parser.add_argument("--flag-above", type=float, metavar="P",
                        help="mark answers whose risk score (the failure probability, else the mean margin) exceeds P")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    requested: list[tuple[str, str]] = []
    if args.image or args.sentence:
        if not args.image or not args.sentence:
            parser.error("--image and --sentence go together (or give --pairs)")
        requested += [(image, sentence) for image in expand_images(args.image) for sentence in args.sentence]
    if args.pairs:
        requested += read_pairs(args.pairs)
    if not requested:
        parser.error("give --image with --sentence, or --pairs")
    pairs, stems, seen = [], [], set()
    for image, sentence in requested:
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
                                                   batch_size=args.batch_size, bands=args.bands,
                                                   stretch=args.stretch, window=args.window,
                                                   max_pixels=args.max_pixels or None)
    scenes = None
    if args.coarse_to_fine:
        scenes = SceneSegmenter(segmenter, window_size=args.window_size, overlap=args.overlap, combine=args.combine,
                                progress=not args.no_progress)
    # rasters written as GeoTIFFs are read and written by windows: no scene-sized map in memory
    files = scenes or SceneSegmenter(segmenter, windows=False, progress=not args.no_progress)
    geotiff = {"auto": None, "png": False, "geotiff": True}[args.output_format]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    failed = 0
    bar = _progress(len(pairs), not args.no_progress)
    say = bar.write if bar is not None else print
    for image, indices in _groups(pairs, args.batch_size):
        sentences = [pairs[i][1] for i in indices]
        by_windows = geotiff is not False and (segmenter.reads_rasters or is_geotiff(image))
        try:
            if by_windows:
                predictions: list[Any] = files.segment_file(image, sentences, [out / stems[i] for i in indices])
            else:
                loaded = segmenter.load(image, reduce=scenes is None)
                answer = scenes(loaded, sentences) if scenes is not None else segmenter(loaded, sentences)
                predictions = answer if isinstance(answer, list) else [answer]
        except (FileNotFoundError, ValueError, ImportError) as err:
            if not args.keep_going:
                raise
            failed += len(indices)
            say(f"{image}: {err}")
            summary += [{**dict.fromkeys(COLUMNS), "image": str(image), "sentence": s, "error": str(err)}
                        for s in sentences]
            if bar is not None:
                bar.update(len(indices))
            continue
        for i, pred in zip(indices, predictions, strict=True):
            paths = pred.files if isinstance(pred, SceneResult) else pred.save(out / stems[i], geotiff=geotiff)
            row = _row(image, pred.sentence, pred, paths)
            summary.append(row)
            if args.flag_above is not None:
                row["flagged"] = pred.risk_score > args.flag_above
            unc = "" if row["mean_uncertainty"] is None else f", mean U^p {row['mean_uncertainty']:.3f}"
            trust = ("" if pred.predicted_iou is None or pred.failure_probability is None else
                     f", predicted IoU {pred.predicted_iou:.2f} (failure {100 * pred.failure_probability:.0f}%)")
            flag = "  [check by hand]" if row["flagged"] else ""
            say(f"{Path(image).name} | {pred.sentence!r}: mask covers {100 * row['mask_share']:.2f}% of the image"
                f"{trust}{unc}{flag} -> {paths['panel']}")
        del predictions
        if bar is not None:
            bar.update(len(indices))
    if bar is not None:
        bar.close()
    if args.sort_by == "risk":  # the answers most likely wrong first; rows that failed to run at the end
        summary.sort(key=lambda row: -row["risk_score"] if row.get("risk_score") is not None else float("inf"))
    (out / "predictions.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in summary)
    with (out / "predictions.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in summary)
    if failed:
        print(f"{parser.prog}: {failed} of {len(pairs)} pairs failed; see the error column of "
              f"{out / 'predictions.csv'}", file=sys.stderr)
        sys.exit(1)
    return summary

