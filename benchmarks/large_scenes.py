"""Large scenes: the single resized pass against coarse to fine (``uncertainty_rrsis.scenes``).

Builds ``--scenes`` mosaics of ``--scene-size`` pixels deterministically from the synthetic
benchmark's generator: a ``--grid`` x ``--grid`` grid of tiles, each tile (with probability
``--object-share``) a synthetic test scene rendered at the tile's size, or else bare ground of one of
the generator's textures. The referent is the target of one tile, described **at scene level**: the
first of the generator's query kinds (category, colour, quadrant, colour and quadrant, leftmost /
rightmost / topmost / bottommost, largest / smallest; order shuffled per scene) that picks out
exactly that object among all objects of the mosaic, by the generator's own rules
(``synthetic.resolve`` and ``synthetic.regions_of``, their margins) applied to the mosaic's
coordinates, and worded by its grammar (``synthetic.describe_query``). Targets cycle through the
five compact categories, so vehicles (the small targets) are among them. Roads and rivers are never
targets (they end at their tile's border).

Because the tiles are rendered at ``scene-size / grid`` pixels, objects are ``tile / 128`` times
larger (in pixels) than in the 128-pixel training scenes: windows of one tile side, resized to the
model's input side, show them at the training scale, while the whole-scene pass shows them
``grid`` times smaller.

Methods (``--methods``, comma-separated; ``NAME@SIZE`` sets the window side in native pixels, by
default ``SceneSegmenter``'s: half the scene side):

* ``single``: ``ReferringSegmenter``, the scene resized to the input side (one pass);
* ``components``, ``gate``, ``gate_mean``, ``mean``, ``windows``: ``SceneSegmenter`` with that
  ``combine`` mode;
* ``tiles``: plain tiling of the whole scene (every window of the grid, the windows' logits alone).

Scenes from ``--held-out-from`` on were not looked at when the defaults (the window side, the
combination and its agreement threshold) were chosen; the tables report them apart.

For each method: IoU per scene at the scene's full resolution (mIoU, oIoU = sum of intersections /
sum of unions, Pr@0.5), the same on the scenes whose target covers less than 1 % of its tile
("small"), wall time per scene (one torch thread, ``--threads``), windows per scene, and on the
first scene the peak memory of one call (``benchmarks._measure.peak_memory``: live tensor bytes
created during the call, and the peak resident-set increase). Run from the repository root::

    python -m benchmarks.large_scenes --checkpoint CKPT --model-label "what CKPT is"

writes ``results/large_scenes.{json,md}`` with the commit measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._measure import environment, load_average, peak_memory
from benchmarks._report import write_result
from uncertainty_rrsis.data import synthetic
from uncertainty_rrsis.inference import LoadedImage, ReferringSegmenter
from uncertainty_rrsis.scenes import SceneSegmenter

ROOT = Path(__file__).resolve().parents[1]
_CYCLE = ("vehicle", "building", "storage tank", "ship", "sports field")
_KINDS = ("category", "colour", "region", "colour_region", "position", "size")


# ------------------------------------------------------------------------------ the scenes
def _queries(kind: str, target: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    q: dict[str, Any] = {"category": target["category"]}
    if kind == "category":
        return [(q, kind)]
    if kind == "colour":
        return [({**q, "colour": target["colour"]}, kind)]
    regions = sorted(synthetic.regions_of(target))
    if kind == "region":
        return [({**q, "region": r}, kind) for r in regions]
    if kind == "colour_region":
        return [({**q, "colour": target["colour"], "region": r}, kind) for r in regions]
    if kind == "position":
        return [({**q, "extreme": e}, "position") for e in ("leftmost", "rightmost", "topmost", "bottommost")]
    return [({**q, "extreme": e}, "size") for e in ("largest", "smallest")]


def build_scene(index: int, *, seed: int, scene_size: int, grid: int, object_share: float) -> dict[str, Any]:
    """One mosaic: ``image`` (S, S, 3) uint8, ``mask`` (S, S) bool, ``sentence``, ``query``, tags. A mosaic in
    which no tile's target can be described uniquely is drawn again (the attempt is part of the seed)."""
    for attempt in range(50):
        scene = _try_mosaic(index, attempt, seed=seed, scene_size=scene_size, grid=grid, object_share=object_share)
        if scene is not None:
            return scene
    raise RuntimeError(f"scene {index}: no mosaic with a target that can be described uniquely at scene level")


def _try_mosaic(index: int, attempt: int, *, seed: int, scene_size: int, grid: int, object_share: float
                ) -> dict[str, Any] | None:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, index, attempt]))
    tile = scene_size // grid
    config = synthetic.SyntheticConfig(seed=seed, image_size=tile)
    image = np.zeros((scene_size, scene_size, 3), dtype=np.uint8)
    objects: list[dict[str, Any]] = []
    tiles: list[dict[str, Any]] = []
    for cell in range(grid * grid):
        row, col = divmod(cell, grid)
        if rng.random() < object_share:
            sample = synthetic.render_sample(config, "test", int(rng.integers(0, 1_000_000)))
            picture = sample.image
            for o in sample.objects:
                if o["area"] > 0:
                    objects.append({**o, "id": cell * 1000 + o["id"], "cx": (col + o["cx"]) / grid,
                                    "cy": (row + o["cy"]) / grid})
            if sample.tags["category"] not in ("road", "river"):
                tiles.append({"cell": cell, "sample": sample, "id": cell * 1000 + sample.target})
        else:
            picture = synthetic.texture(rng, tile, str(rng.choice(list(synthetic.BACKGROUNDS))))
            noise = rng.normal(0.0, config.noise, picture.shape)
            picture = np.clip(np.rint(picture + noise), 0, 255).astype(np.uint8)
        image[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile] = picture
    by_id = {o["id"]: o for o in objects}
    wanted = _CYCLE[index % len(_CYCLE)]
    order = sorted(tiles, key=lambda t: (t["sample"].tags["category"] != wanted, float(rng.random())))
    for candidate in order:
        target = by_id[candidate["id"]]
        for kind in rng.permutation(_KINDS):
            for query, name in _queries(str(kind), target):
                found = synthetic.resolve(query, objects)
                if len(found) != 1 or found[0]["id"] != target["id"]:
                    continue
                if "region" in query and synthetic.regions_of(target) != {query["region"]}:
                    continue
                row, col = divmod(candidate["cell"], grid)
                mask = np.zeros((scene_size, scene_size), dtype=bool)
                mask[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile] = candidate["sample"].mask
                frac = target["area"] / float(tile * tile)
                same = sum(1 for o in objects if o["category"] == target["category"]) - 1
                sentence = synthetic.describe_query(query, name, rng=rng)
                return {"index": index, "attempt": attempt, "image": image, "mask": mask, "sentence": sentence,
                        "query": query, "kind": name, "category": target["category"], "target_pixels": int(mask.sum()),
                        "small": frac < 0.01, "same_category": same, "objects": len(objects)}
    return None


# ------------------------------------------------------------------------------ the methods
def _method(name: str, segmenter: ReferringSegmenter, window_batch: int) -> tuple[str, Any]:
    base, _, size = name.partition("@")
    window = int(size) if size else None  # None: SceneSegmenter's default (zoom 2)
    if base == "single":
        return name, lambda scene, sentence: segmenter(scene, sentence)
    if base == "tiles":  # every window runs, and the windows alone decide
        return name, SceneSegmenter(segmenter, window_size=window, combine="windows", full_tiling=True,
                                    window_batch=window_batch)
    return name, SceneSegmenter(segmenter, window_size=window, combine=base, window_batch=window_batch)


def _iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def _summary(rows: list[dict[str, Any]], method: str, held_out: int) -> dict[str, Any]:
    def block(subset: list[dict[str, Any]]) -> dict[str, Any]:
        if not subset:
            return {"count": 0}
        ious = [r["methods"][method]["iou"] for r in subset]
        inter = sum(r["methods"][method]["intersection"] for r in subset)
        union = sum(r["methods"][method]["union"] for r in subset)
        return {"count": len(subset), "mIoU": float(np.mean(ious)), "oIoU": inter / union if union else 0.0,
                "Pr@0.5": float(np.mean([i >= 0.5 for i in ious]))}

    times = [r["methods"][method]["seconds"] for r in rows]
    windows = [r["methods"][method].get("windows", 0) for r in rows]
    return {"all": block(rows), "small": block([r for r in rows if r["small"]]),
            "tuning": block([r for r in rows if r["index"] < held_out]),
            "held_out": block([r for r in rows if r["index"] >= held_out]),
            "seconds_median": float(np.median(times)), "seconds_mean": float(np.mean(times)),
            "windows_mean": float(np.mean(windows))}


def paired(result: dict[str, Any], method: str, *, reference: str = "single", draws: int = 2000) -> dict[str, Any]:
    """The per-scene IoU difference of ``method`` and ``reference``: mean, 95 % bootstrap interval (scenes
    drawn with replacement, ``numpy`` seed 0), scenes better / worse by more than one IoU point."""
    diff = np.array([r["methods"][method]["iou"] - r["methods"][reference]["iou"] for r in result["scenes"]])
    rng = np.random.default_rng(0)
    means = [float(diff[rng.integers(0, len(diff), len(diff))].mean()) for _ in range(draws)]
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high),
            "better": int((diff > 0.01).sum()), "worse": int((diff < -0.01).sum())}


def _paired_text(result: dict[str, Any], method: str) -> str:
    if method == "single" or "single" not in result["summary"]:
        return "—"
    d = paired(result, method)
    return (f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], "
            f"{d['better']} / {d['worse']}")


def _pct(block: dict[str, Any]) -> str:
    return "—" if not block["count"] else f"{100 * block['mIoU']:.1f}"


def _markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"# Large scenes ({result['environment'].get('git_commit', '?')})", "",
             f"{s['scenes']} mosaics of {s['scene_size']} x {s['scene_size']} pixels ({s['grid']} x {s['grid']} "
             f"tiles of "
             f"{s['scene_size'] // s['grid']} px), seed {s['seed']}; model: {s['model_label']} (input "
             f"{s['image_size']} px); {s['threads']} torch thread(s); load average {result['load_average']}.", "",
             f"| method | mIoU | oIoU | Pr@0.5 | mIoU small | mIoU scenes < {s['held_out_from']} | mIoU scenes >= "
             f"{s['held_out_from']} | vs single: mIoU difference [95 % interval], scenes better / worse "
             "| s / scene (median) | windows / scene | peak tensors MiB | peak RSS increase MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for method, summ in result["summary"].items():
        mem = result["memory"].get(method, {})
        small = summ["small"]
        small_text = "—" if not small["count"] else "{:.1f} ({})".format(100 * small["mIoU"], small["count"])
        rss = mem.get("rss_delta_mib")
        rss_text = "—" if rss is None else f"{rss:.0f}"
        lines.append(
            f"| {method} | {100 * summ['all']['mIoU']:.1f} | {100 * summ['all']['oIoU']:.1f} | "
            f"{100 * summ['all']['Pr@0.5']:.1f} | {small_text} | {_pct(summ['tuning'])} | {_pct(summ['held_out'])} | "
            f"{_paired_text(result, method)} | "
            f"{summ['seconds_median']:.2f} | {summ['windows_mean']:.1f} | {mem.get('peak_delta_mib', 0):.0f} | "
            f"{rss_text} |")
    lines += ["", "Per scene (IoU in %):", "",
              "| scene | sentence | target px | " + " | ".join(result["summary"]) + " |",
              "| ---: | --- | ---: |" + " ---: |" * len(result["summary"])]
    for r in result["scenes"]:
        lines.append(f"| {r['index']} | {r['sentence']} | {r['target_pixels']} | "
                     + " | ".join(f"{100 * r['methods'][m]['iou']:.1f}" for m in result["summary"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint folder (with tokenizer/)")
    parser.add_argument("--model-label", help="what the checkpoint is, for the results")
    parser.add_argument("--from-json", type=Path, help="only write the Markdown of an earlier run's JSON")
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--scene-size", type=int, default=2048)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--object-share", type=float, default=0.5, help="share of tiles that hold a synthetic scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="single,components,gate,gate_mean,mean,windows,tiles,components@512,"
                                              "gate@512,components@128,gate@128")
    parser.add_argument("--held-out-from", type=int, default=24,
                        help="scenes from this index on were not looked at when the defaults were chosen")
    parser.add_argument("--window-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the peak memory of each method on the first scene")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "results")))
    parser.add_argument("--tag", default="large_scenes")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
        args.from_json.with_suffix(".md").write_text(_markdown(result) + "\n", encoding="utf-8")
        return result
    if not args.checkpoint or not args.model_label:
        parser.error("--checkpoint and --model-label are required (unless --from-json)")
    torch.set_num_threads(args.threads)
    shown = list(argv if argv is not None else sys.argv[1:])
    shown[shown.index("--checkpoint") + 1] = "CKPT"  # a path of this machine: keep it out of the results
    segmenter = ReferringSegmenter.from_pretrained(args.checkpoint, device="cpu", batch_size=args.window_batch)
    methods = dict(_method(m.strip(), segmenter, args.window_batch) for m in args.methods.split(","))
    result: dict[str, Any] = {
        "environment": environment(torch.device("cpu")),
        "command": " ".join(["python -m benchmarks.large_scenes", *shown]),
        "settings": {"scenes": args.scenes, "scene_size": args.scene_size, "grid": args.grid,
                     "object_share": args.object_share, "seed": args.seed, "model_label": args.model_label,
                     "image_size": segmenter.image_size, "threads": args.threads, "window_batch": args.window_batch,
                     "held_out_from": args.held_out_from,
                     "methods": {name: (m.settings() if isinstance(m, SceneSegmenter) else "single pass")
                                 for name, m in methods.items()}},
        "load_average": {"start": load_average()}, "scenes": [], "memory": {},
    }
    for index in range(args.scenes):
        scene = build_scene(index, seed=args.seed, scene_size=args.scene_size, grid=args.grid,
                            object_share=args.object_share)
        loaded = LoadedImage(Image.fromarray(scene["image"]), scene["mask"].shape, name=f"scene {index}")
        row = {k: scene[k] for k in ("index", "sentence", "query", "kind", "category", "target_pixels", "small",
                                     "same_category", "objects")}
        row["methods"] = {}
        for name, run in methods.items():
            start = time.perf_counter()
            pred = run(loaded, scene["sentence"])
            seconds = time.perf_counter() - start
            inter, union = _iou(pred.mask.numpy(), scene["mask"])
            details = pred.details or {}
            row["methods"][name] = {"iou": inter / union if union else 0.0, "intersection": inter, "union": union,
                                    "seconds": seconds, "windows": details.get("windows", 0),
                                    "window_size": details.get("window_size"), "redrawn": details.get("redrawn")}
            del pred
            if index == 0 and args.memory:
                call = lambda run=run, loaded=loaded, text=scene["sentence"]: run(loaded, text)  # noqa: E731
                result["memory"][name] = peak_memory(call, torch.device("cpu"))
        result["scenes"].append(row)
        print(f"scene {index} ({scene['sentence']!r}, {scene['target_pixels']} px): "
              + ", ".join(f"{m} {100 * r['iou']:.1f} ({r['seconds']:.1f} s)" for m, r in row["methods"].items()),
              flush=True)
    result["load_average"]["end"] = load_average()
    result["summary"] = {name: _summary(result["scenes"], name, args.held_out_from) for name in methods}
    write_result(args.out, args.tag, result, _markdown(result))
    print(_markdown(result))
    return result


if __name__ == "__main__":
    main()
