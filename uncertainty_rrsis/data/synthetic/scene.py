"""The scene model of the synthetic benchmark: object categories and colours, placement, measuring.

:class:`_Scene` places objects under constraints (inside the image, apart from each other, off
the roads or on them, in a part of the image), keeps their drawing specs in id order, draws them
(:mod:`.rendering`) and measures each object's visible area and centroid on the rendered label
map. What to place for a query is decided in :mod:`.sampling`.

Axis legend
    s: the image side   y, x: rows / columns of the label map   n = s * s: its pixels, flattened
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .config import SyntheticConfig
from .rendering import curve_points, draw_scene, rect_points, road_pixels, ship_points

__all__ = ["CATEGORIES"]

CATEGORIES: tuple[str, ...] = ("building", "vehicle", "storage tank", "ship", "sports field", "road", "river")
_THIN = ("road", "river")
_COMPACT = ("building", "vehicle", "storage tank", "ship", "sports field")
#: category -> the colour names it is drawn in (palette of :mod:`.rendering`)
_COLOURS = {
    "building": ("red", "blue", "white", "yellow", "black"),
    "vehicle": ("red", "blue", "white", "yellow", "black"),
    "storage tank": ("white", "red", "blue", "yellow"),
    "ship": ("white", "red", "yellow", "black"),
    "sports field": ("green", "red", "blue"),
}


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

    # -- rendering and measuring
    def render(self, background: str) -> tuple[np.ndarray, np.ndarray]:
        """(s, s, 3) uint8 picture and (s, s) uint8 label map of the objects placed so far."""
        return draw_scene(self.specs, background, rng=self.rng, size=self.s, noise=self.cfg.noise)

    def road_pixels(self) -> np.ndarray:
        """(s, s) bool: pixels of the roads drawn so far (before compact objects)."""
        return road_pixels(self.specs, size=self.s)

    def measure(self, labels: np.ndarray) -> list[dict[str, Any]]:
        """Every object's record (``SyntheticSample.objects``) from the (s, s) label map ``labels``:
        its visible ``area`` in pixels, the centroid ``cx``, ``cy`` of its pixel centres as fractions
        of the side (-1 when hidden), and ``on_road`` for a vehicle with half its pixels on a road."""
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

