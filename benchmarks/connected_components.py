"""Connected components of scene masks: the labeller scene segmentation uses, against the one it replaced.

``uncertainty_rrsis.scenes.connected_components`` labels a bool map in one pass
(``scipy.ndimage.label``, 8-connectivity). The labeller it replaced repeated a 3 x 3 max-pool
until nothing changed, so its cost was (the longest path inside a component) x (pixels); it is
kept here, as ``iterative``, to measure the difference.

Shapes, each drawn at ``--sizes`` pixels a side (deterministic, no randomness but ``blobs``' seed):

* ``river``: one band about ``side / 100`` pixels wide (at least 3) winding across the scene;
* ``roads``: a road network, a grid of 3-pixel roads every ``side / 8`` pixels and two diagonals,
  all one component;
* ``serpentine``: one 1-pixel path folded back and forth over the whole scene (rows 2 apart),
  the worst case for the iterative labeller: its path is about ``side^2 / 2`` pixels long;
* ``blobs``: 200 random discs (many components).

For each (shape, size): the median of ``--repeats`` calls of the one-pass labeller, and one call
of the iterative labeller in a child process stopped after ``--before-limit`` seconds (a larger
size of a shape that did not finish is not tried). Where both finished, the two partitions of the
pixels are checked to be the same. Run from the repository root::

    python -m benchmarks.connected_components          # writes results/connected_components.{json,md}
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._measure import environment, load_average
from benchmarks._report import write_result
from uncertainty_rrsis.scenes import connected_components

SHAPES = ("river", "roads", "serpentine", "blobs")


def draw(shape: str, side: int) -> torch.Tensor:
    """(side, side) bool map of one of :data:`SHAPES`."""
    mask = np.zeros((side, side), dtype=bool)
    rows, cols = np.mgrid[0:side, 0:side]
    if shape == "river":
        half = max(1, side // 200)
        x = np.arange(side)
        centre = side / 2 + side * 0.3 * np.sin(2 * np.pi * x / (side / 2.5)) + side * 0.08 * np.sin(2 * np.pi * x / 97)
        low = np.minimum(centre, np.roll(centre, 1))  # each column spans up to its left neighbour: one band
        high = np.maximum(centre, np.roll(centre, 1))
        low[0], high[0] = centre[0], centre[0]
        mask = (rows >= low[None, :] - half) & (rows <= high[None, :] + half)
    elif shape == "roads":
        step = max(8, side // 8)
        mask = ((rows % step) < 3) | ((cols % step) < 3)
        mask |= np.abs(rows - cols) < 2
        mask |= np.abs(rows + cols - side) < 2
    elif shape == "serpentine":
        mask[0::2, 1 : side - 1] = True  # every other row, folded at alternating ends
        for k, row in enumerate(range(0, side - 2, 2)):
            col = side - 2 if k % 2 == 0 else 1
            mask[row : row + 3, col] = True
    elif shape == "blobs":
        rng = np.random.default_rng(0)
        for _ in range(200):
            cy, cx = rng.integers(0, side, size=2)
            radius = rng.uniform(0.005, 0.03) * side
            y0, y1 = max(0, int(cy - radius)), min(side, int(cy + radius) + 1)
            x0, x1 = max(0, int(cx - radius)), min(side, int(cx + radius) + 1)
            mask[y0:y1, x0:x1] |= (rows[y0:y1, x0:x1] - cy) ** 2 + (cols[y0:y1, x0:x1] - cx) ** 2 <= radius**2
    else:
        raise ValueError(f"shape must be one of {SHAPES}; got {shape!r}")
    return torch.from_numpy(np.ascontiguousarray(mask))


def iterative_components(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The replaced labeller: every pixel takes the largest id of its 8-connected component by repeated 3 x 3
    max-pooling (cost: longest path x pixels)."""
    if not bool(mask.any()):
        return torch.zeros(mask.shape, dtype=torch.int64), 0
    keep = mask[None, None]
    ids = torch.arange(1, mask.numel() + 1, dtype=torch.float64).reshape(1, 1, *mask.shape)
    labels = torch.where(keep, ids, torch.zeros_like(ids))
    while True:
        grown = torch.where(keep, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    _, dense = torch.unique(labels[0, 0].long(), return_inverse=True)
    return dense, int(dense.max())


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two labellings split the pixels into the same parts (numbers may differ; 0 = background)."""
    if not torch.equal(a > 0, b > 0):
        return False
    pairs = torch.unique(torch.stack([a[a > 0], b[b > 0]]), dim=1)
    return len(torch.unique(pairs[0])) == pairs.shape[1] == len(torch.unique(pairs[1]))


def _before_child(shape: str, side: int, queue: Any) -> None:
    torch.set_num_threads(1)
    mask = draw(shape, side)
    start = time.perf_counter()
    labels, count = iterative_components(mask)
    queue.put((time.perf_counter() - start, labels.numpy(), count))


def time_before(shape: str, side: int, limit: float) -> tuple[float | None, np.ndarray | None]:
    """Seconds of the iterative labeller in a child process, or None when it ran past ``limit``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_before_child, args=(shape, side, queue))
    child.start()
    try:
        seconds, labels, _ = queue.get(timeout=limit + 30)  # + the child's start and the drawing
    except Exception:
        seconds, labels = None, None
    child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()
    if seconds is not None and seconds > limit:
        return None, None
    return seconds, labels


def run(sizes: list[int], repeats: int, before_limit: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for shape in SHAPES:
        before_gave_up = False
        for side in sizes:
            mask = draw(shape, side)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                labels, count = connected_components(mask)
                times.append(time.perf_counter() - start)
            row: dict[str, Any] = {"shape": shape, "side": side, "pixels_on": int(mask.sum()), "components": count,
                                   "after_s": statistics.median(times), "after_runs": repeats}
            if before_gave_up:
                row.update(before_s=None, before="not tried (a smaller size ran past the limit)")
            else:
                seconds, old = time_before(shape, side, before_limit)
                if seconds is None:
                    before_gave_up = True
                    row.update(before_s=None, before=f"did not finish in {before_limit:g} s")
                else:
                    row.update(before_s=seconds, before=f"{seconds:.3f}",
                               same_labels=same_partition(labels, torch.from_numpy(old)))
            rows.append(row)
            print(f"{shape:>10} {side:>5}: after {row['after_s'] * 1e3:8.2f} ms, before {row['before']}", flush=True)
    return {"rows": rows}


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# Connected components ({env.get('git_commit') or 'uncommitted'})",
        "",
        f"{env.get('cpu')}; torch {env.get('torch')}, {result['threads']} torch thread(s); load average "
        f"{result['load_average']}. One pass: `scipy.ndimage.label` (median of {result['repeats']} calls). "
        f"Iterative: repeated 3 x 3 max-pooling, the labeller scene segmentation used before (one call, stopped "
        f"after {result['before_limit']:g} s).",
        "",
        "| shape | side | pixels on | components | one pass ms | iterative s | same partition |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        same = {True: "yes", False: "NO", None: "-"}[row.get("same_labels")]
        lines.append(f"| {row['shape']} | {row['side']} | {row['pixels_on']:,} | {row['components']:,} | "
                     f"{row['after_s'] * 1e3:.2f} | {row['before']} | {same} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 480, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before-limit", type=float, default=120.0, help="seconds the iterative labeller may run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="connected_components")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_load = load_average()
    result = run(args.sizes, args.repeats, args.before_limit)
    result.update(environment=environment(torch.device("cpu")), threads=args.threads, repeats=args.repeats,
                  before_limit=args.before_limit, load_average={"start": start_load, "end": load_average()})
    path = write_result(Path(args.results), args.tag, result, render(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
