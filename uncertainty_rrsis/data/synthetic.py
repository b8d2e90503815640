"""The synthetic referring remote-sensing benchmark (runs anywhere, generated in seconds).

Each sample is an overhead scene (textured field / water / urban / soil ground) with
objects of seven categories drawn from above: buildings (rectangles with roof colours),
vehicles (tiny rectangles), storage tanks (circles), ships (pointed oriented hulls),
sports fields (courts with white lines), roads and rivers (thin, long, curved). The
sentence refers to exactly one object through a *query*:

==================  ==========================================  =============================
query kind          example                                     what tells the target apart
==================  ==========================================  =============================
``category``        "the storage tank"                          only object of its category
``colour``          "the red building"                          colour among same category
``region``          "the ship in the upper left"                quadrant
``colour_region``   "the white vehicle in the lower right"      colour and quadrant
``position``        "the leftmost storage tank"                 extreme centroid (margin)
``size``            "the largest building"                      extreme area (ratio >= 1.5)
``on_road``         "the vehicle on the road"                   lies on a road
==================  ==========================================  =============================

Same-category distractors are placed so that the text is needed; the generator then
re-checks every query against the rendered label map (:func:`resolve`) and re-draws the
scene until exactly one visible object matches. Hard cases come on purpose: dense
distractors (``dense_fraction``), thin targets (roads, rivers), tiny targets (vehicles)
and a large scale range (size queries).

Everything is deterministic from ``(seed, split, index)`` (NumPy ``SeedSequence``), so
the same configuration writes byte-identical files. On disk the benchmark uses the
RISBench layout (read it with :class:`~uncertainty_rrsis.data.RISBench`)::

    <root>/img_rgb/<split>_<index>.png      RGB, image_size x image_size
    <root>/mask/<split>_<index>.png         "L" PNG, 0 / 255
    <root>/output_phrase_<split>.txt        "<split>_<index>.png <sentence>"
    <root>/tags_<split>.jsonl               {"name": ..., "tags": {...}} per sample
    <root>/synthetic.json                   the configuration and generator version

Tags per sample: ``category``, ``query`` (kind), ``distractors`` (same-category
objects besides the target), ``objects`` (all objects), ``thin``, ``tiny`` (< 1 % of the
image), ``dense`` (>= 4 distractors), ``size`` (tiny/small/medium/large),
``background``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ._synth_draw import Canvas, curve_points, rect_points, shade, ship_points, texture

__all__ = [
    "GENERATOR_VERSION",
    "CATEGORIES",
    "SyntheticConfig",
    "SyntheticSample",
    "render_sample",
    "resolve",
    "generate_synthetic",
    "ensure_synthetic",
    "clean_stale_temporaries",
]

#: Bumped whenever the pictures or sentences change; part of the cache key.
GENERATOR_VERSION = 1

CATEGORIES: tuple[str, ...] = ("building", "vehicle", "storage tank", "ship", "sports field", "road", "river")
_THIN = ("road", "river")
_COMPACT = ("building", "vehicle", "storage tank", "ship", "sports field")
_CATEGORY_WEIGHTS = {
    "building": 0.22,
    "vehicle": 0.12,
    "storage tank": 0.16,
    "ship": 0.16,
    "sports field": 0.14,
    "road": 0.10,
    "river": 0.10,
}
_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (198, 46, 40),
    "blue": (40, 84, 204),
    "white": (238, 238, 232),
    "yellow": (232, 200, 40),
    "black": (30, 30, 34),
    "green": (46, 160, 70),
}
_COLOURS = {
    "building": ("red", "blue", "white", "yellow", "black"),
    "vehicle": ("red", "blue", "white", "yellow", "black"),
    "storage tank": ("white", "red", "blue", "yellow"),
    "ship": ("white", "red", "yellow", "black"),
    "sports field": ("green", "red", "blue"),
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
_REGIONS = ("upper left", "upper right", "lower left", "lower right")
_REGION_WORDS = {
    "upper left": ("upper left", "top left"),
    "upper right": ("upper right", "top right"),
    "lower left": ("lower left", "bottom left"),
    "lower right": ("lower right", "bottom right"),
}
_EXTREMES_POS = ("leftmost", "rightmost", "topmost", "bottommost")
_EXTREME_PHRASE = {
    "leftmost": "furthest to the left",
    "rightmost": "furthest to the right",
    "topmost": "closest to the top",
    "bottommost": "closest to the bottom",
}
_REGION_MARGIN = 0.06  # centroids this close to a midline belong to both halves
_POSITION_MARGIN = 0.10  # fraction of the image between the extreme and the runner-up
_SIZE_RATIO = 1.5
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Every field is part of the cache key of :func:`ensure_synthetic`.

    Attributes:
        seed: base seed; sample ``(split, i)`` depends only on ``(seed, split, i)``.
        image_size: side of the square images in pixels (64-128 is the intended range).
        n_train, n_val, n_test: samples per split.
        dense_fraction: share of compact-target scenes with 5-8 same-category distractors.
        max_clutter: at most this many objects of other categories per scene.
        noise: std of the Gaussian pixel noise added to the picture (0-255 scale).
        min_target_pixels: smallest visible target area accepted.
        object_scale: multiplies the size of every compact object (buildings, vehicles,
            tanks, ships, sports fields); above 1 makes the task easier at low resolution.
    """

    seed: int = 0
    image_size: int = 96
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 1000
    dense_fraction: float = 0.15
    max_clutter: int = 3
    noise: float = 5.0
    min_target_pixels: int = 8
    object_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels; got {self.image_size}")
        if min(self.n_train, self.n_val, self.n_test) < 0:
            raise ValueError("split sizes must be >= 0")
        if not 0.5 <= self.object_scale <= 2.0:
            raise ValueError(f"object_scale must be in [0.5, 2]; got {self.object_scale}")
        if not 0.0 <= self.dense_fraction <= 1.0:
            raise ValueError(f"dense_fraction must be in [0, 1]; got {self.dense_fraction}")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    def fingerprint(self) -> str:
        """12 hex digits identifying this configuration and generator version."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class SyntheticSample:
    """One rendered sample.

    Attributes:
        image: (S, S, 3) uint8 picture.
        mask: (S, S) bool, the target's visible pixels.
        sentence: the referring expression.
        query: what the sentence means (see :func:`resolve`).
        objects: every object with its ``id``, ``category``, ``colour``, measured ``area``,
            centroid ``cx``/``cy`` (fractions of the image) and ``on_road``.
        target: id of the referred object (``objects[target - 1]``).
        tags: per-sample tags (module docstring).
    """

    image: np.ndarray
    mask: np.ndarray
    sentence: str
    query: dict[str, Any]
    objects: list[dict[str, Any]]
    target: int
    tags: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- resolve
def _regions_of(obj: dict[str, Any]) -> set[str]:
    """Quadrants an object's centroid may be said to lie in (both near a midline)."""
    xs = (
        {"left"}
        if obj["cx"] < 0.5 - _REGION_MARGIN
        else {"right"}
        if obj["cx"] > 0.5 + _REGION_MARGIN
        else {"left", "right"}
    )
    ys = (
        {"upper"}
        if obj["cy"] < 0.5 - _REGION_MARGIN
        else {"lower"}
        if obj["cy"] > 0.5 + _REGION_MARGIN
        else {"upper", "lower"}
    )
    return {f"{y} {x}" for y in ys for x in xs}


def _extreme_key(extreme: str) -> tuple[Callable[[dict[str, Any]], float], float]:
    """(score where larger = more extreme, required margin)."""
    keys: dict[str, tuple[Callable[[dict[str, Any]], float], float]] = {
        "leftmost": (lambda o: -o["cx"], _POSITION_MARGIN),
        "rightmost": (lambda o: o["cx"], _POSITION_MARGIN),
        "topmost": (lambda o: -o["cy"], _POSITION_MARGIN),
        "bottommost": (lambda o: o["cy"], _POSITION_MARGIN),
        "largest": (lambda o: math.log(max(o["area"], 1)), math.log(_SIZE_RATIO)),
        "smallest": (lambda o: -math.log(max(o["area"], 1)), math.log(_SIZE_RATIO)),
    }
    return keys[extreme]


def resolve(query: dict[str, Any], objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All visible objects that ``query`` may refer to (exactly one for a valid sample).

    ``query`` keys: ``category`` (required), optional ``colour``, ``region`` (one of
    "upper left", ...), ``on_road`` (True) and ``extreme`` ("leftmost", "rightmost",
    "topmost", "bottommost", "largest", "smallest"). An object whose centroid is near a
    midline counts for both halves; a superlative whose runner-up is within the margin
    (0.1 of the image for positions, area ratio 1.5 for sizes) returns both candidates.
    """
    cands = [o for o in objects if o["category"] == query["category"] and o["area"] > 0]
    if query.get("colour") is not None:
        cands = [o for o in cands if o["colour"] == query["colour"]]
    if query.get("on_road"):
        cands = [o for o in cands if o["on_road"]]
    if query.get("region") is not None:
        cands = [o for o in cands if query["region"] in _regions_of(o)]
    if query.get("extreme") is not None and len(cands) > 1:
        score, margin = _extreme_key(query["extreme"])
        ranked = sorted(cands, key=score, reverse=True)
        if score(ranked[0]) - score(ranked[1]) < margin:
            return ranked[:2]
        return ranked[:1]
    return cands


def _is_unique(query: dict[str, Any], objects: list[dict[str, Any]], target: int) -> bool:
    found = resolve(query, objects)
    if len(found) != 1 or found[0]["id"] != target:
        return False
    if query.get("region") is not None:  # the target itself must not sit on a midline
        return _regions_of(found[0]) == {query["region"]}
    return True


# ----------------------------------------------------------------------- the scene
class _Scene:
    """Builds one scene: places objects under constraints, renders, measures."""

    def __init__(self, rng: np.random.Generator, cfg: SyntheticConfig) -> None:
        self.rng = rng
        self.cfg = cfg
        self.s = cfg.image_size
        self.specs: list[dict[str, Any]] = []  # drawing specs, in id order
        self.boxes: list[tuple[float, float, float, float]] = []  # occupied (x0, y0, x1, y1)
        self.road_mask: np.ndarray | None = None

    # -- sampling helpers
    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def choice(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def colour(self, category: str, *, exclude: Iterable[str] = ()) -> str:
        options = [c for c in _COLOURS[category] if c not in set(exclude)]
        return self.choice(options)

    def _geometry(self, category: str, scale: float, cx: float, cy: float) -> dict[str, Any]:
        s, u = self.s * self.cfg.object_scale, self.uniform
        if category == "building":
            a = (0.10 + 0.14 * scale) * s
            angle = 0.0 if self.rng.random() < 0.5 else u(-0.5, 0.5)
            return {"kind": "rect", "pts": rect_points(cx, cy, a, a * u(0.6, 1.0), angle)}
        if category == "vehicle":
            length = (0.065 + 0.03 * scale) * s
            return {"kind": "rect", "pts": rect_points(cx, cy, length, length * u(0.45, 0.6), u(0, math.pi))}
        if category == "storage tank":
            return {"kind": "circle", "cx": cx, "cy": cy, "r": (0.05 + 0.06 * scale) * s}
        if category == "ship":
            length = (0.15 + 0.18 * scale) * s
            return {
                "kind": "ship",
                "pts": ship_points(cx, cy, length, length * u(0.2, 0.28), u(0, 2 * math.pi)),
            }
        if category == "sports field":
            a = (0.18 + 0.14 * scale) * s
            angle = 0.0 if self.rng.random() < 0.5 else math.pi / 2
            return {"kind": "court", "pts": rect_points(cx, cy, a, a * u(0.55, 0.75), angle)}
        raise ValueError(category)

    @staticmethod
    def _bbox(geom: dict[str, Any]) -> tuple[float, float, float, float]:
        if geom["kind"] == "circle":
            r = geom["r"]
            return (geom["cx"] - r, geom["cy"] - r, geom["cx"] + r, geom["cy"] + r)
        xs = [p[0] for p in geom["pts"]]
        ys = [p[1] for p in geom["pts"]]
        return (min(xs), min(ys), max(xs), max(ys))

    def _fits(self, box: tuple[float, float, float, float], *, off_road: bool) -> bool:
        s, gap = self.s, 2.0
        if box[0] < 1 or box[1] < 1 or box[2] > s - 2 or box[3] > s - 2:
            return False
        for o in self.boxes:
            if box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap:
                return False
        if off_road and self.road_mask is not None:
            x0, y0 = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
            if self.road_mask[y0 : int(box[3]) + 2, x0 : int(box[2]) + 2].any():
                return False
        return True

    def place(
        self,
        category: str,
        *,
        colour: str,
        scale: float | None = None,
        where: Callable[[float, float], bool] | None = None,
        off_road: bool = False,
        at: tuple[float, float, float] | None = None,
        tries: int = 40,
    ) -> int | None:
        """Place a compact object; returns its id or None when no free spot was found."""
        for _ in range(tries):
            sc = self.uniform(0, 1) if scale is None else scale
            if at is not None:
                cx, cy, angle = at
                geom = self._geometry(category, sc, cx, cy)
                if geom["kind"] == "rect":  # align the vehicle with the road
                    pts = geom["pts"]
                    length = math.dist(pts[0], pts[1])
                    width = math.dist(pts[1], pts[2])
                    geom["pts"] = rect_points(cx, cy, length, width, angle)
            else:
                cx, cy = self.uniform(0.08, 0.92) * self.s, self.uniform(0.08, 0.92) * self.s
                if where is not None and not where(cx / self.s, cy / self.s):
                    continue
                geom = self._geometry(category, sc, cx, cy)
            box = self._bbox(geom)
            if not self._fits(box, off_road=off_road):
                continue
            self.boxes.append(box)
            self.specs.append({"category": category, "colour": colour, "geom": geom})
            return len(self.specs)
        return None

    def add_curve(self, category: str, *, vertical: bool, base: float) -> int:
        """Add a road or river crossing the image near ``base`` (fraction of the side)."""
        width = (self.uniform(0.03, 0.05) if category == "road" else self.uniform(0.055, 0.085)) * self.s
        amplitude = self.uniform(0.02, 0.06)
        pts = curve_points(self.rng, self.s, vertical=vertical, base=base, amplitude=amplitude)
        colour = self.choice([(86, 86, 90), (176, 172, 164)]) if category == "road" else (54, 98, 162)
        self.specs.append(
            {
                "category": category,
                "colour": None,
                "geom": {"kind": "curve", "pts": pts, "width": max(2, round(width)), "rgb": colour},
            }
        )
        return len(self.specs)

    # -- rendering
    def render(self, background: str) -> tuple[np.ndarray, np.ndarray]:
        canvas = Canvas(texture(self.rng, self.s, background))
        order = sorted(range(len(self.specs)), key=lambda i: self.specs[i]["geom"]["kind"] != "curve")
        for i in order:
            spec = self.specs[i]
            label, geom = i + 1, spec["geom"]
            if geom["kind"] == "curve":
                canvas.line(geom["pts"], geom["width"], geom["rgb"], label)
                if spec["category"] == "road" and geom["width"] >= 4:
                    canvas.detail_line(geom["pts"][::2], shade(geom["rgb"], 1.35))
                continue
            rgb = tuple(
                int(c)
                for c in np.clip(np.asarray(_PALETTE[spec["colour"]]) + self.rng.integers(-12, 13, 3), 0, 255)
            )
            if geom["kind"] == "circle":
                canvas.ellipse(geom["cx"], geom["cy"], geom["r"], rgb, label)
                if geom["r"] >= 4:
                    canvas.detail_ellipse(geom["cx"], geom["cy"], geom["r"] * 0.55, shade(rgb, 0.8))
                continue
            canvas.polygon(geom["pts"], rgb, label)
            p = geom["pts"]
            if geom["kind"] == "court":
                cx, cy = np.mean([q[0] for q in p]), np.mean([q[1] for q in p])
                inner = [(cx + 0.7 * (x - cx), cy + 0.7 * (y - cy)) for x, y in p]
                canvas.detail_polygon(inner, (240, 240, 240))
                mid = [
                    ((inner[0][0] + inner[1][0]) / 2, (inner[0][1] + inner[1][1]) / 2),
                    ((inner[2][0] + inner[3][0]) / 2, (inner[2][1] + inner[3][1]) / 2),
                ]
                canvas.detail_line(mid, (240, 240, 240))
            elif geom["kind"] == "rect" and spec["category"] == "building":
                cx, cy = np.mean([q[0] for q in p]), np.mean([q[1] for q in p])
                a = ((p[0][0] + p[3][0]) / 2, (p[0][1] + p[3][1]) / 2)
                b = ((p[1][0] + p[2][0]) / 2, (p[1][1] + p[2][1]) / 2)
                ridge = [(cx + 0.75 * (x - cx), cy + 0.75 * (y - cy)) for x, y in (a, b)]
                canvas.detail_line(ridge, shade(rgb, 1.25 if sum(rgb) < 600 else 0.8))
            elif geom["kind"] == "ship":
                ridge = [
                    (
                        p[0][0] * 0.7 + p[2][0] * 0.15 + p[3][0] * 0.15,
                        p[0][1] * 0.7 + p[2][1] * 0.15 + p[3][1] * 0.15,
                    ),
                    (
                        p[0][0] * 0.2 + p[2][0] * 0.4 + p[3][0] * 0.4,
                        p[0][1] * 0.2 + p[2][1] * 0.4 + p[3][1] * 0.4,
                    ),
                ]
                canvas.detail_line(ridge, shade(rgb, 1.3 if sum(rgb) < 600 else 0.75))
        labels = canvas.labels()
        image = np.asarray(canvas.rgb, dtype=np.float32)
        if self.cfg.noise > 0:
            image = image + self.rng.normal(0.0, self.cfg.noise, image.shape).astype(np.float32)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels

    def road_pixels(self) -> np.ndarray:
        """(s, s) bool: pixels of the roads drawn so far (before compact objects)."""
        canvas = Canvas(np.zeros((self.s, self.s, 3), np.uint8))
        for i, spec in enumerate(self.specs):
            if spec["category"] == "road":
                canvas.line(spec["geom"]["pts"], spec["geom"]["width"], (255, 255, 255), i + 1)
        return canvas.labels() > 0

    def measure(self, labels: np.ndarray) -> list[dict[str, Any]]:
        s = self.s
        counts = np.bincount(labels.reshape(-1), minlength=len(self.specs) + 1)
        ys, xs = np.mgrid[0:s, 0:s]
        sum_x = np.bincount(labels.reshape(-1), weights=xs.reshape(-1), minlength=len(self.specs) + 1)
        sum_y = np.bincount(labels.reshape(-1), weights=ys.reshape(-1), minlength=len(self.specs) + 1)
        out = []
        for i, spec in enumerate(self.specs, start=1):
            area = int(counts[i])
            on_road = False
            if self.road_mask is not None and spec["category"] == "vehicle" and area:
                on_road = bool(self.road_mask[labels == i].mean() >= 0.5)
            out.append(
                {
                    "id": i,
                    "category": spec["category"],
                    "colour": spec["colour"],
                    "area": area,
                    "cx": float((sum_x[i] / area + 0.5) / s) if area else -1.0,
                    "cy": float((sum_y[i] / area + 0.5) / s) if area else -1.0,
                    "on_road": on_road,
                }
            )
        return out


# ------------------------------------------------------------------- query design
def _quadrant_test(region: str, *, margin: float) -> Callable[[float, float], bool]:
    top, left = region.startswith("upper"), region.endswith("left")

    def inside(x: float, y: float) -> bool:
        return (x < 0.5 - margin if left else x > 0.5 + margin) and (
            y < 0.5 - margin if top else y > 0.5 + margin
        )

    return inside


def _outside_quadrant(region: str, *, margin: float) -> Callable[[float, float], bool]:
    top, left = region.startswith("upper"), region.endswith("left")

    def outside(x: float, y: float) -> bool:
        return (x > 0.5 + margin if left else x < 0.5 - margin) or (
            y > 0.5 + margin if top else y < 0.5 - margin
        )

    return outside


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _try_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> SyntheticSample | None:
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
    return SyntheticSample(image, mask, _sentence(rng, query, kind), query, objects, target, tags)


def _sentence(rng: np.random.Generator, query: dict[str, Any], kind: str) -> str:
    cat = query["category"]
    col = query.get("colour")
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if kind == "category":
        return pick([f"the {cat}", f"the {cat} in the image"])
    if kind == "colour":
        options = [f"the {col} {cat}"]
        if cat == "building":
            options.append(f"the building with the {col} roof")
        return pick(options)
    if kind in ("region", "colour_region"):
        where = pick(_REGION_WORDS[query["region"]])
        noun = f"{col} {cat}" if kind == "colour_region" else cat
        return pick([f"the {noun} in the {where}", f"the {noun} at the {where}"])
    if kind == "position":
        ext = query["extreme"]
        return pick([f"the {ext} {cat}", f"the {cat} {_EXTREME_PHRASE[ext]}"])
    if kind == "size":
        if query["extreme"] == "largest":
            return pick([f"the largest {cat}", f"the biggest {cat}"])
        return f"the smallest {cat}"
    return pick([f"the {cat} on the road", f"the {cat} driving on the road"])


def render_sample(config: SyntheticConfig, split: str, index: int) -> SyntheticSample:
    """Render sample ``index`` of ``split``: a pure function of ``(config, split, index)``."""
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


# --------------------------------------------------------------------------- writing
def generate_synthetic(
    root: str | Path, config: SyntheticConfig | None = None, *, progress: bool = True
) -> Path:
    """Write the benchmark described by ``config`` under ``root`` (RISBench layout).

    ``root`` must not exist or be empty. Returns ``root``. Prefer
    :func:`ensure_synthetic`, which caches and writes atomically.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"synthetic output folder {root} is not empty; pick a new folder or use ensure_synthetic()"
        )
    (root / "img_rgb").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(exist_ok=True)
    total = sum(config.sizes.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="synthetic RRSIS", unit="sample")
    try:
        for split, n in config.sizes.items():
            lines, tag_lines = [], []
            for i in range(n):
                sample = render_sample(config, split, i)
                name = f"{split}_{i:06d}.png"
                Image.fromarray(sample.image).save(root / "img_rgb" / name, format="PNG", compress_level=1)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(
                    root / "mask" / name, format="PNG", compress_level=1
                )
                lines.append(f"{name} {sample.sentence}\n")
                tag_lines.append(json.dumps({"name": name, "tags": sample.tags}, sort_keys=True) + "\n")
                if bar is not None:
                    bar.update(1)
            (root / f"output_phrase_{split}.txt").write_text("".join(lines), encoding="utf-8")
            (root / f"tags_{split}.jsonl").write_text("".join(tag_lines), encoding="utf-8")
    finally:
        if bar is not None:
            bar.close()
    (root / "synthetic.json").write_text(
        json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return root


_MARKER = "COMPLETE.json"
#: The generator's temporary folders: ``.synthetic-<fingerprint>-<random>`` beside the cache
#: folders, each with a ``<folder>.lock`` file locked by the generating process while it runs.
_TEMP_NAME = re.compile(r"^\.synthetic-[0-9a-f]{12}-[0-9a-z_]{6,16}$")
#: A temporary folder without a lock file (written by a version without them, or on a system
#: without file locks) is removed once nothing in it has changed for this long.
_STALE_AFTER_S = 24 * 3600.0

try:  # POSIX advisory locks: released by the kernel when the process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _try_lock(path: Path, *, create: bool) -> Any:
    """An open file holding an exclusive lock on ``path``, or None when another process holds it
    (or the file is missing and ``create`` is False, or the system has no file locks)."""
    if fcntl is None:
        return None
    try:
        handle = open(path, "a+" if create else "r+")  # noqa: SIM115 - kept open while locked
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for child in folder.iterdir():
        try:
            times.append(child.lstat().st_mtime)
        except OSError:
            continue
    return max(times)


def clean_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove what interrupted :func:`ensure_synthetic` runs left in ``root``; returns the removed folders.

    Only the generator's own temporary folders are considered (``.synthetic-<fingerprint>-<random>``,
    real directories, not links). One is removed when its lock file can be locked (the process that
    generated into it has ended: killed, crashed, power lost) or, lacking a lock file, when nothing
    in it has changed for 24 hours. A folder whose generation is still running is never touched.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if not _TEMP_NAME.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        lock_path = entry.with_name(entry.name + ".lock")
        handle = _try_lock(lock_path, create=False) if lock_path.exists() else None
        if handle is None:
            if lock_path.exists() and fcntl is not None:
                continue  # locked: a live generation
            try:
                if time.time() - _newest_change(entry) < _STALE_AFTER_S:
                    continue
            except OSError:
                continue
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            if handle is not None:
                lock_path.unlink(missing_ok=True)
                handle.close()
    for lock_path in sorted(root.glob(".synthetic-*.lock")):  # locks whose folder is gone
        folder = lock_path.with_name(lock_path.name[: -len(".lock")])
        if _TEMP_NAME.match(folder.name) and not folder.exists():
            handle = _try_lock(lock_path, create=False)
            if handle is not None:
                lock_path.unlink(missing_ok=True)
                handle.close()
    return removed


def _marker_matches(folder: Path, config: SyntheticConfig) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text(encoding="utf-8")) == config.to_dict()
    except (OSError, json.JSONDecodeError):
        return False


def ensure_synthetic(
    root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 96,
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 1000,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Generate the synthetic benchmark once into a cache folder and return its path.

    The dataset lives in ``<root>/synthetic-<fingerprint>/`` where the fingerprint hashes
    the full :class:`SyntheticConfig` (``seed``, sizes, ``image_size`` and ``options``)
    and :data:`GENERATOR_VERSION`. If that folder holds a ``COMPLETE.json`` marker equal to
    the configuration, nothing is generated. Otherwise the data are written into a
    temporary sibling folder, the marker is written last and the folder is renamed into
    place, so an interrupted run never leaves a half-written dataset that looks complete
    (and two processes racing for the same cache both end up with one complete copy). The
    temporary folder of a run that was killed is removed by the next call
    (:func:`clean_stale_temporaries`).

    Returns:
        The folder to pass to :class:`~uncertainty_rrsis.data.RISBench`.
    """
    config = SyntheticConfig(
        seed=seed, image_size=image_size, n_train=n_train, n_val=n_val, n_test=n_test, **options
    )
    root = Path(root)
    final = root / f"synthetic-{config.fingerprint()}"
    clean_stale_temporaries(root)
    if _marker_matches(final, config):
        return final
    root.mkdir(parents=True, exist_ok=True)
    while True:  # lock first, then create the folder: a cleaner never sees it unlocked
        tmp = root / f".{final.name}-{secrets.token_hex(5)}"
        lock_path = tmp.with_name(tmp.name + ".lock")
        if tmp.exists() or lock_path.exists():
            continue
        lock = _try_lock(lock_path, create=True)
        if lock is None and fcntl is not None:
            continue
        try:
            tmp.mkdir()
        except FileExistsError:
            if lock is not None:
                lock.close()
            continue
        break
    try:
        generate_synthetic(tmp, config, progress=progress)
        (tmp / _MARKER).write_text(json.dumps(config.to_dict(), sort_keys=True), encoding="utf-8")
        if final.exists() and not _marker_matches(final, config):
            shutil.rmtree(final)  # stale or foreign content under our cache name
        try:
            os.rename(tmp, final)
        except OSError:
            if not _marker_matches(final, config):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock_path.unlink(missing_ok=True)
        if lock is not None:
            lock.close()
    return final
