"""Sampling one synthetic sample: a target, a query that only it answers, the scene around both.

:func:`render_sample` seeds a random stream from ``(seed, split, index, GENERATOR_VERSION)`` and
tries scenes until one is valid. A try (:func:`_try_scene`) draws the target's category and the
query kind, the background and the number of same-category distractors; places roads and rivers
first, then the target and distractors so that the text is needed (other colours, the other
quadrants, beyond the extreme, a different size, off the road), then clutter of other categories;
renders the scene, and keeps it only when the target is visible enough and the query picks it
alone on the rendered label map. The sentence is worded last (:mod:`.sentences`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .config import GENERATOR_VERSION, SyntheticConfig, SyntheticSample
from .query import _EXTREMES_POS, _REGIONS, _is_unique
from .scene import _COMPACT, _THIN, _Scene
from .sentences import describe_query

__all__ = ["render_sample"]

_CATEGORY_WEIGHTS = {
    "building": 0.22,
    "vehicle": 0.12,
    "storage tank": 0.16,
    "ship": 0.16,
    "sports field": 0.14,
    "road": 0.10,
    "river": 0.10,
}
_KINDS_COMPACT = {
    "category": 0.12,
    "colour": 0.25,
    "region": 0.2,
    "colour_region": 0.1,
    "position": 0.18,
    "size": 0.15,
}
_KINDS_THIN = {"category": 0.5, "position": 0.5}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def render_sample(config: SyntheticConfig, split: str, index: int) -> SyntheticSample:
    """Render sample ``index`` of ``split``: a pure function of ``(config, split, index)``.

    The sample's ``image`` is (S, S, 3) uint8 and its ``mask`` (S, S) bool, S = ``config.image_size``.
    Raises ValueError for a split other than "train", "val", "test", and RuntimeError when 200 tries
    give no valid scene.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {tuple(_SPLIT_CODE)}; got {split!r}")
    rng = np.random.default_rng(
        np.random.SeedSequence([int(config.seed), _SPLIT_CODE[split], int(index), GENERATOR_VERSION])
    )
    for _ in range(200):
        sample = _try_scene(rng, config)
        if sample is not None:
            return sample
    raise RuntimeError(f"could not build a valid synthetic scene for {split} {index} (config {config})")


def _quadrant_test(region: str, *, margin: float) -> Callable[[float, float], bool]:
    """Whether a point (fractions of the side) lies in quadrant ``region``, ``margin`` off its midlines."""
    top, left = region.startswith("upper"), region.endswith("left")

    def inside(x: float, y: float) -> bool:
        return (x < 0.5 - margin if left else x > 0.5 + margin) and (
            y < 0.5 - margin if top else y > 0.5 + margin
        )

    return inside


def _outside_quadrant(region: str, *, margin: float) -> Callable[[float, float], bool]:
    """Whether a point lies in another half than ``region``'s, ``margin`` off the midline, on some axis."""
    top, left = region.startswith("upper"), region.endswith("left")

    def outside(x: float, y: float) -> bool:
        return (x > 0.5 + margin if left else x < 0.5 - margin) or (
            y > 0.5 + margin if top else y < 0.5 - margin
        )

    return outside


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One key of ``weights``, drawn with probability proportional to its weight."""
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _try_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> SyntheticSample | None:
    """One try (the module docstring says what it draws): the sample, or None when it is not valid."""
    scene = _Scene(rng, cfg)
    category = _weighted(rng, _CATEGORY_WEIGHTS)
    if category in _THIN:
        kind = _weighted(rng, _KINDS_THIN)
    else:
        kinds = dict(_KINDS_COMPACT)
        if category == "vehicle":
            kinds["on_road"] = 0.2
        kind = _weighted(rng, kinds)
    if category == "ship":
        background = "water" if rng.random() < 0.7 else scene.choice(("field", "urban", "soil"))
    elif category in _THIN or kind == "on_road":
        background = scene.choice(("field", "urban", "soil"))
    else:
        background = scene.choice(("field", "water", "urban", "soil"))
    dense = category in _COMPACT and kind != "category" and rng.random() < cfg.dense_fraction
    n_distract = int(rng.integers(5, 9)) if dense else int(rng.integers(1, 4))
    query: dict[str, Any] = {"category": category}
    target: int | None

    # roads first: targets, distractors or clutter that compact objects avoid or use
    if category in _THIN:
        vertical = bool(rng.random() < 0.5)
        if kind == "position":
            bases = sorted([scene.uniform(0.15, 0.38), scene.uniform(0.62, 0.85)])
            first = bool(rng.random() < 0.5)
            query["extreme"] = (
                ("leftmost" if first else "rightmost") if vertical else ("topmost" if first else "bottommost")
            )
            ids = [scene.add_curve(category, vertical=vertical, base=b) for b in bases]
            target = ids[0] if first else ids[1]
        else:
            target = scene.add_curve(category, vertical=vertical, base=scene.uniform(0.3, 0.7))
            other = "river" if category == "road" else "road"
            if rng.random() < 0.5:
                scene.add_curve(other, vertical=not vertical, base=scene.uniform(0.2, 0.8))
        n_distract = 1 if kind == "position" else 0
    elif kind == "on_road" or rng.random() < 0.25:
        scene.add_curve("road", vertical=bool(rng.random() < 0.5), base=scene.uniform(0.3, 0.7))
    if any(sp["category"] == "road" for sp in scene.specs):
        scene.road_mask = scene.road_pixels()

    if category in _COMPACT:
        colour = scene.colour(category)
        if kind == "category":
            target = scene.place(category, colour=colour)
        elif kind == "colour":
            query["colour"] = colour
            target = scene.place(category, colour=colour)
            for _ in range(n_distract):
                scene.place(category, colour=scene.colour(category, exclude=[colour]))
        elif kind in ("region", "colour_region"):
            region = scene.choice(_REGIONS)
            query["region"] = region
            target = scene.place(category, colour=colour, where=_quadrant_test(region, margin=0.1))
            outside = _outside_quadrant(region, margin=0.1)
            if kind == "colour_region":
                query["colour"] = colour
                scene.place(category, colour=colour, where=outside)
                scene.place(category, colour=scene.colour(category, exclude=[colour]))
                for _ in range(max(0, n_distract - 2)):
                    scene.place(category, colour=scene.colour(category, exclude=[colour]))
            else:
                for _ in range(n_distract):
                    scene.place(category, colour=scene.colour(category), where=outside)
        elif kind == "position":
            extreme = scene.choice(_EXTREMES_POS)
            query["extreme"] = extreme
            axis_x = extreme in ("leftmost", "rightmost")
            low = extreme in ("leftmost", "topmost")
            edge = scene.uniform(0.12, 0.4)
            ref = edge if low else 1 - edge

            def beyond(
                x: float, y: float, *, ref: float = ref, low: bool = low, axis_x: bool = axis_x
            ) -> bool:
                v = x if axis_x else y
                return v > ref + 0.16 if low else v < ref - 0.16

            def near(x: float, y: float, *, ref: float = ref, axis_x: bool = axis_x) -> bool:
                return abs((x if axis_x else y) - ref) < 0.05

            target = scene.place(category, colour=colour, where=near)
            for _ in range(n_distract):
                scene.place(category, colour=scene.colour(category), where=beyond)
        elif kind == "size":
            largest = bool(rng.random() < 0.5)
            query["extreme"] = "largest" if largest else "smallest"
            target = scene.place(
                category,
                colour=colour,
                scale=scene.uniform(0.8, 1.0) if largest else scene.uniform(0.0, 0.15),
            )
            for _ in range(n_distract):
                sc = scene.uniform(0.0, 0.35) if largest else scene.uniform(0.55, 1.0)
                scene.place(category, colour=scene.colour(category), scale=sc)
        else:  # on_road
            query["on_road"] = True
            road = next(sp for sp in scene.specs if sp["category"] == "road")
            pts = road["geom"]["pts"]
            k = int(rng.integers(4, len(pts) - 5))
            t = scene.uniform(0, 1)
            (x0, y0), (x1, y1) = pts[k], pts[k + 1]
            at = (x0 + t * (x1 - x0), y0 + t * (y1 - y0), math.atan2(y1 - y0, x1 - x0))
            target = scene.place(category, colour=colour, at=at, tries=3)
            for _ in range(n_distract):
                scene.place(category, colour=scene.colour(category), off_road=True)
        if target is None:
            return None

    # clutter: other compact categories, anywhere free
    others = [c for c in _COMPACT if c != category]
    for _ in range(int(rng.integers(1, cfg.max_clutter + 1)) if cfg.max_clutter > 0 else 0):
        other = scene.choice(others)
        scene.place(other, colour=scene.colour(other), off_road=other != "vehicle", tries=10)

    image, labels = scene.render(background)
    objects = scene.measure(labels)
    assert target is not None
    if objects[target - 1]["area"] < cfg.min_target_pixels or not _is_unique(query, objects, target):
        return None
    mask = labels == target
    same = sum(1 for o in objects if o["category"] == category and o["id"] != target and o["area"] > 0)
    frac = objects[target - 1]["area"] / float(cfg.image_size**2)
    tags = {
        "category": category,
        "query": kind,
        "distractors": same,
        "objects": sum(1 for o in objects if o["area"] > 0),
        "thin": category in _THIN,
        "tiny": frac < 0.01,
        "dense": same >= 4,
        "size": "tiny" if frac < 0.01 else "small" if frac < 0.04 else "medium" if frac < 0.12 else "large",
        "background": background,
    }
    return SyntheticSample(image, mask, describe_query(query, kind, rng=rng), query, objects, target, tags)

