"""Scenes of real size: ``examples/predict.py`` on a large 4-band GeoTIFF, wall time and peak memory.

Writes (once, into ``--workdir``) a ``--side`` x ``--side`` px, 4-band uint16 GeoTIFF (tiled 512 x
512, deflate, UTM CRS, 0.5 m pixels), band of rows by band of rows, in the synthetic benchmark's
colours times 16 (12-bit-like values; read with ``--stretch minmax:0,4080``, so the model sees
those colours): a field-coloured ground (smooth variations and noise) crossed by a winding river
``0.06 side`` wide, a straight road, and light storage tanks (discs of radius ``side / 100`` to
``side / 50``), the top-left-most one larger (radius ``0.03 side``).

Then, each in a child process of its own (its peak resident memory is the kernel's ``VmHWM`` of that
process, read when it ends), for a sentence about a thin structure ("the river") and one about a
compact object ("the storage tank at the top left"):

* ``predict``: ``examples/predict.py CKPT --image scene.tif --sentence ... --stretch minmax:0,4080``
  (the whole-scene pass, written band by band);
* ``predict --coarse-to-fine``: the same with windows at twice the whole-scene pass's resolution
  (its default window, half the scene's side);
* ``in memory``: ``ReferringSegmenter(...)(scene, sentence).save(...)``, the scene and its maps held
  whole (what predicting a GeoTIFF cost before it was read by windows).

For each: wall time of the child (model loading included), peak resident memory, the windows run,
the mask's share of the scene and the IoU of the written mask with the referent as drawn. Run from the repository root::

    python -m benchmarks.large_rasters --checkpoint runs/default/checkpoints/best --model-label "..."

writes ``results/large_rasters.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._measure import environment, load_average
from benchmarks._report import write_result

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {"thin": "the river", "compact": "the storage tank at the top left"}
STRETCH = "minmax:0,4080"  # the scene's values are colours times 16
_ROWS = 512


# ------------------------------------------------------------------------------ the scene
def _river_centre(side: int, x: np.ndarray) -> np.ndarray:
    return side * (0.5 + 0.25 * np.sin(2 * np.pi * x / (side * 0.9)) + 0.04 * np.sin(2 * np.pi * x / (side * 0.13)))


def _tanks(side: int) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(11)
    tanks = [(side * 0.1, side * 0.1, side * 0.03)]  # the top-left-most one
    while len(tanks) < 12:
        cy, cx = rng.uniform(0.2, 0.95, size=2) * side
        radius = rng.uniform(side / 100, side / 50)
        if abs(cy - _river_centre(side, np.array([cx]))[0]) > side * 0.1:
            tanks.append((cy, cx, radius))
    return tanks


def river_rows(side: int, y0: int, y1: int) -> np.ndarray:
    """(y1 - y0, side) bool: the river as drawn."""
    rows = np.arange(y0, y1)[:, None]
    centre = _river_centre(side, np.arange(side))[None, :]
    return np.abs(rows - centre) <= side * 0.03


def write_scene(path: Path, side: int) -> None:
    """The scene (module docstring), written band of rows by band of rows."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(7)
    ground = np.array([92, 128, 62, 150], np.float32) * 16  # the synthetic "field" ground; band 4: near infrared
    coarse = ground[:, None, None] * rng.uniform(0.85, 1.15, size=(4, 40, 40)).astype(np.float32)
    tanks = _tanks(side)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 4, "dtype": "uint16", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "crs": "EPSG:32633",
               "transform": Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4100000.0), "BIGTIFF": "IF_SAFER"}
    tmp = path.with_name(path.name + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        cols = np.arange(side)[None, :]
        for y0 in range(0, side, _ROWS):
            y1 = min(side, y0 + _ROWS)
            rows = np.arange(y0, y1)[:, None]
            data = np.empty((4, y1 - y0, side), dtype=np.float32)
            gy = (rows + 0.5) * 40 / side - 0.5  # smooth fields: the 40 x 40 grid resized bilinearly
            gx = (cols + 0.5) * 40 / side - 0.5
            iy, ix = np.clip(np.floor(gy).astype(int), 0, 38), np.clip(np.floor(gx).astype(int), 0, 38)
            fy, fx = np.clip(gy - iy, 0, 1).astype(np.float32), np.clip(gx - ix, 0, 1).astype(np.float32)
            for b in range(4):
                c = coarse[b]
                data[b] = ((c[iy, ix] * (1 - fx) + c[iy, ix + 1] * fx) * (1 - fy)
                           + (c[iy + 1, ix] * (1 - fx) + c[iy + 1, ix + 1] * fx) * fy)
            river = river_rows(side, y0, y1)
            data[:, river] = np.array([54, 98, 162, 20], np.float32)[:, None] * 16
            road = np.abs(rows - (0.9 * side - 0.6 * cols)) <= side * 0.0175
            data[:, road & ~river] = np.array([86, 86, 90, 100], np.float32)[:, None] * 16
            for cy, cx, radius in tanks:
                if y0 - radius <= cy <= y1 + radius:
                    disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
                    data[:, disc] = np.array([214, 214, 206, 200], np.float32)[:, None] * 16
            data += rng.normal(0, 48, size=data.shape).astype(np.float32)
            dst.write(np.clip(data, 0, 4095).astype(np.uint16), window=Window(0, y0, side, y1 - y0))
    tmp.replace(path)


# ------------------------------------------------------------------------------ one measured run
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process; returns its result (wall time measured by the parent)."""
    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, str(ROOT / "examples"))
    if spec["method"] == "in memory":
        from uncertainty_rrsis.inference import ReferringSegmenter

        segmenter = ReferringSegmenter.from_pretrained(spec["checkpoint"], device="cpu", stretch=STRETCH)
        pred = segmenter(spec["scene"], spec["sentence"])
        files = pred.save(Path(spec["out"]) / "memory")
        return {"mask": str(files["mask"]), "windows": 0, "mask_share": pred.mask_fraction}
    import predict  # examples/predict.py

    argv = [spec["checkpoint"], "--image", spec["scene"], "--sentence", spec["sentence"], "--output-dir", spec["out"],
            "--no-progress", "--device", "cpu", "--stretch", STRETCH]
    if spec["method"] == "predict --coarse-to-fine":
        argv.append("--coarse-to-fine")
    (row,) = predict.main(argv)
    return {"mask": row["mask"], "windows": row["windows"], "mask_share": row["mask_share"]}


def _peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in a child process: wall time, peak resident memory and what it wrote."""
    code = ("import json, sys; from benchmarks.large_rasters import child, _peak_rss_mib; "
            "spec = json.loads(sys.argv[1]); out = child(spec); out['peak_rss_mib'] = _peak_rss_mib(); "
            "print('RESULT ' + json.dumps(out))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "seconds": seconds}
    return {**json.loads(lines[-1][7:]), "seconds": seconds}


def target_rows(kind: str, side: int, y0: int, y1: int) -> np.ndarray:
    """(y1 - y0, side) bool: the referent of the ``thin`` (the river) or ``compact`` (the top-left tank)
    sentence as drawn."""
    if kind == "thin":
        return river_rows(side, y0, y1)
    cy, cx, radius = _tanks(side)[0]
    rows, cols = np.arange(y0, y1)[:, None], np.arange(side)[None, :]
    return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2


def target_iou(mask_path: str, side: int, kind: str) -> float:
    """IoU of a written mask with its referent as drawn, read band of rows by band of rows."""
    import rasterio
    from rasterio.windows import Window

    inter = union = 0
    with rasterio.open(mask_path) as src:
        for y0 in range(0, side, _ROWS):
            y1 = min(side, y0 + _ROWS)
            pred = src.read(1, window=Window(0, y0, side, y1 - y0)) == 255
            truth = target_rows(kind, side, y0, y1)
            inter += int((pred & truth).sum())
            union += int((pred | truth).sum())
    return inter / union if union else 0.0


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# Large rasters ({env.get('git_commit') or 'uncommitted'})",
        "",
        f"{env.get('cpu')} ({env.get('cpu_count')} cores), {result['threads']} torch thread(s); torch "
        f"{env.get('torch')}; load average {result['load_average']}. Scene: {result['side']:,} x "
        f"{result['side']:,} px, "
        f"4-band uint16 GeoTIFF (tiled, deflate, {result['scene_mb']:.0f} MB on disk, "
        f"{result['side'] ** 2 * 8 / 1e9:.1f} GB of pixels). Model: {result['model_label']}. Wall time: the whole "
        "child process (Python start, model loading, reading, the passes, writing); peak memory: its resident "
        "set's high-water mark (VmHWM).",
        "",
        "| sentence | method | s | peak RSS GB | windows | mask share | IoU with the referent |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['sentence']} | {row['method']} | {row['seconds']:.1f} | failed | | | |")
            continue
        iou = "" if row.get("iou") is None else f"{100 * row['iou']:.1f} %"
        peak = "n/a" if row.get("peak_rss_mib") is None else f"{row['peak_rss_mib'] / 1024:.2f}"
        lines.append(f"| {row['sentence']} | {row['method']} | {row['seconds']:.1f} | {peak} | {row['windows']} | "
                     f"{100 * row['mask_share']:.2f} % | {iou} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model-label", required=True, help="what the checkpoint is, for the report")
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--workdir", default=".cache/large_rasters", help="where the scene and the outputs go")
    parser.add_argument("--methods", default="predict,predict --coarse-to-fine,in memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="large_rasters")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{args.side}.tif"
    if not scene.is_file():
        start = time.perf_counter()
        write_scene(scene, args.side)
        print(f"wrote {scene} in {time.perf_counter() - start:.0f} s", flush=True)
    start_load = load_average()
    rows = []
    for kind, sentence in SENTENCES.items():
        for method in args.methods.split(","):
            out = work / f"out_{kind}_{method.replace(' ', '_').replace('-', '')}"
            spec = {"method": method, "checkpoint": args.checkpoint, "scene": str(scene), "sentence": sentence,
                    "out": str(out), "threads": args.threads}
            row = {"sentence": sentence, "kind": kind, "method": method, **measure(spec)}
            if "mask" in row:
                row["iou"] = target_iou(row["mask"], args.side, kind)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"rows": rows, "side": args.side, "scene_mb": scene.stat().st_size / 1e6, "threads": args.threads,
              "model_label": args.model_label, "checkpoint": args.checkpoint,
              "environment": environment(torch.device("cpu")),
              "load_average": {"start": start_load, "end": load_average()}}
    path = write_result(Path(args.results), args.tag, result, render(result))
    print(render(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
