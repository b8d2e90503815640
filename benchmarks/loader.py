"""How fast one loader worker prepares RRSIS-D-like samples, with the JPEG check and its record.

Writes an RRSIS-D-shaped folder into a temporary directory (``--images`` 800 x 800 JPEGs at
``--quality``, textured so that they compress like aerial photographs, each with one object as a
compressed RLE in ``instances.json``) and reads it with :class:`uncertainty_rrsis.data.RRSISD` at
the paper's 480 px input, in one process (one worker's work; tokenization left out), timing
``dataset[i]`` over every sample:

* ``check, first epoch``: the strict JPEG check of every file, each recorded in the SQLite record
  of checked files (a fresh one);
* ``check, later epochs``: the same dataset again, every file found unchanged in the record;
* ``check, record from another process``: a new dataset object on the same record (what a new
  loader worker sees in the next epoch);
* ``no check``: ``verify_images=False``.

Each is the median over ``--epochs`` passes. The record's share of a later epoch is the measured
time of its look-ups (``os.stat`` and one query per file) over the loading time. With
``--gpu-results`` (default: the committed ``results/gpu.json``), the number of workers that keep
one GPU's training step fed (the Full model's training images per second there) is reported.
Run from the repository root::

    python -m benchmarks.loader                 # writes results/loader.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._measure import environment, load_average
from benchmarks._report import write_result
from uncertainty_rrsis.data import RRSISD, CheckedFiles
from uncertainty_rrsis.data._rle import rle_encode


def aerial_like(side: int, seed: int) -> np.ndarray:
    """(side, side, 3) uint8: smooth fields, fine texture and a few sharp-edged blocks."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, size=(side // 32 + 2, side // 32 + 2, 3)).astype(np.float32)
    fields = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
                        dtype=np.float32)
    texture = rng.normal(0, 14, size=(side, side, 1)).astype(np.float32)
    picture = fields + texture
    for _ in range(40):
        y, x = rng.integers(0, side - 40, size=2)
        h, w = rng.integers(8, 40, size=2)
        picture[y : y + h, x : x + w] = rng.uniform(0, 255, size=3)
    return np.clip(picture, 0, 255).astype(np.uint8)


def write_folder(root: Path, images: int, side: int, quality: int) -> int:
    """An RRSIS-D folder of ``images`` test samples; returns the mean JPEG size in bytes."""
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True)
    refs, infos, anns, sizes = [], [], [], []
    for k in range(images):
        name = f"{k:05d}.jpg"
        path = image_dir / name
        Image.fromarray(aerial_like(side, k)).save(path, quality=quality)
        sizes.append(path.stat().st_size)
        mask = np.zeros((side, side), dtype=bool)
        mask[side // 4 : side // 2, side // 3 : side // 2 + 40 + k] = True
        refs.append({"ref_id": k, "ann_id": 10_000 + k, "image_id": k, "split": "test", "file_name": name,
                     "category_id": 1, "sent_ids": [k],
                     "sentences": [{"raw": "the vehicle", "sent": "the vehicle", "tokens": ["the", "vehicle"],
                                    "sent_id": k}]})
        infos.append({"id": k, "file_name": name, "height": side, "width": side})
        anns.append({"id": 10_000 + k, "image_id": k, "segmentation": [rle_encode(mask)], "categories_id": 1,
                     "bbox": [side // 3, side // 4, side // 2 + 40 + k, side // 2], "area": int(mask.sum()),
                     "iscrowd": 0})
    (root / "rrsisd").mkdir()
    with (root / "rrsisd" / "refs(unc).p").open("wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    instances = {"images": infos, "annotations": anns, "categories": [{"id": 1, "name": "vehicle"}]}
    (root / "rrsisd" / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return int(statistics.mean(sizes))


def epoch_seconds(dataset: RRSISD) -> float:
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


def record_lookup_seconds(dataset: RRSISD) -> float:
    """Seconds of the record's work alone in a later epoch: the key (``os.stat``) and the look-up, every file."""
    start = time.perf_counter()
    for record in dataset.records:
        key = CheckedFiles.key(record.image_path)
        if key not in dataset.checked_files:
            raise RuntimeError(f"{record.image_path} is not in the record")
    return time.perf_counter() - start


def gpu_training_rate(path: Path) -> dict[str, Any] | None:
    """The Full model's training images per second in a committed GPU result, with where it came from."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    for rec in result["sections"]["rows"]["records"]:
        if rec["variant"] == "Full" and rec["mode"] == "train":
            env = result["environment"]
            return {"img_s": rec["throughput_img_s"], "file": path.name, "device": env.get("device_name"),
                    "commit": env.get("git_commit"), "batch": rec["batch"], "dtype": rec["dtype"],
                    "image_size": rec["image_size"]}
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rrsisd"
        mean_bytes = write_folder(root, args.images, args.side, args.quality)
        record = Path(tmp) / "checked_images.sqlite"
        checked = RRSISD(root, "test", image_size=args.image_size, check_record=record)
        first = epoch_seconds(checked)  # the first pass checks and records every file
        later = [epoch_seconds(checked) for _ in range(args.epochs)]
        fresh = [epoch_seconds(RRSISD(root, "test", image_size=args.image_size, check_record=record))
                 for _ in range(args.epochs)]
        lookups = [record_lookup_seconds(RRSISD(root, "test", image_size=args.image_size, check_record=record))
                   for _ in range(args.epochs)]
        plain = RRSISD(root, "test", image_size=args.image_size, verify_images=False)
        unchecked = [epoch_seconds(plain) for _ in range(args.epochs)]
        every = RRSISD(root, "test", image_size=args.image_size)
        every.checked_files = None  # type: ignore[assignment]  # no record: the check on every read
        always = [epoch_seconds(every) for _ in range(max(1, args.epochs // 2))]
    n = args.images

    def per_sample(seconds: float) -> float:
        return seconds / n

    rows = {
        "check, first epoch": per_sample(first),
        "check, later epochs": per_sample(statistics.median(later)),
        "check, record from another process": per_sample(statistics.median(fresh)),
        "check on every read (no record)": per_sample(statistics.median(always)),
        "no check": per_sample(statistics.median(unchecked)),
    }
    lookup = per_sample(statistics.median(lookups))
    result: dict[str, Any] = {
        "images": n, "side": args.side, "quality": args.quality, "mean_jpeg_bytes": mean_bytes,
        "image_size": args.image_size, "epochs": args.epochs,
        "seconds_per_sample": rows, "record_lookup_s_per_sample": lookup,
        "record_share_of_later_epoch": lookup / rows["check, later epochs"],
    }
    gpu = gpu_training_rate(Path(args.gpu_results))
    if gpu is not None:
        rate = 1.0 / rows["check, later epochs"]
        result["gpu"] = {**gpu, "workers_to_feed_later_epochs": math.ceil(gpu["img_s"] / rate),
                         "workers_to_feed_first_epoch": math.ceil(gpu["img_s"] * rows["check, first epoch"])}
    return result


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    rows = result["seconds_per_sample"]
    lines = [
        f"# Data loading: one worker, RRSIS-D-like samples ({env.get('git_commit') or 'uncommitted'})",
        "",
        f"{env.get('cpu')}; torch {env.get('torch')}, {result['threads']} torch thread(s); load average "
        f"{result['load_average']}. {result['images']} JPEGs of {result['side']} x {result['side']} px (quality "
        f"{result['quality']}, {result['mean_jpeg_bytes'] / 1024:.0f} KB on average) with RLE masks, read by `RRSISD` "
        f"and resized to {result['image_size']} px in one process; median of {result['epochs']} passes.",
        "",
        "| reading | ms / sample | samples / s per worker |",
        "| --- | ---: | ---: |",
    ]
    for name, seconds in rows.items():
        lines.append(f"| {name} | {seconds * 1e3:.2f} | {1 / seconds:.1f} |")
    lines += [
        "",
        f"The record's look-ups (the file's size and modification time, one SQLite query) take "
        f"{result['record_lookup_s_per_sample'] * 1e6:.0f} µs per sample, "
        f"{100 * result['record_share_of_later_epoch']:.2f} % of a later epoch's loading time.",
    ]
    gpu = result.get("gpu")
    if gpu:
        lines += [
            "",
            f"One GPU's training step ({gpu['device']}, Full model, {gpu['dtype']}, batch {gpu['batch']}, "
            f"{gpu['image_size']} px: {gpu['img_s']:.1f} images/s in `{gpu['file']}`, commit {gpu['commit']}) is kept "
            f"fed by {gpu['workers_to_feed_later_epochs']} worker(s) of this machine's speed after the first epoch, "
            f"{gpu['workers_to_feed_first_epoch']} in the first.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--side", type=int, default=800)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--image-size", type=int, default=480)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-results", default=str(Path(__file__).parent / "results" / "gpu.json"))
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="loader")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_load = load_average()
    result = run(args)
    result.update(environment=environment(torch.device("cpu")), threads=args.threads,
                  load_average={"start": start_load, "end": load_average()})
    path = write_result(Path(args.results), args.tag, result, render(result))
    print(render(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
