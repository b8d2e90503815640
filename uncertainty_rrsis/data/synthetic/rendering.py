"""Drawing the synthetic benchmark: textures, shapes, their footprints, and a whole scene.

Every shape is drawn twice with the same geometry: in colour on the RGB canvas and with
its object id on a label canvas, so the label map gives each object's exact visible
pixels (later shapes hide earlier ones). Nothing is antialiased, so masks and pixels agree.
:func:`draw_scene` draws a scene's object specs (what :mod:`.scene` places) on a background
texture and adds the pixel noise; :func:`road_pixels` gives the roads' footprint alone.

Coordinates are pixels (x right, y down); ``s`` is the image side.

Axis legend
    s: the image side   y, x: rows / columns of a picture   3: its RGB channels
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "Canvas",
    "texture",
    "rect_points",
    "ship_points",
    "curve_points",
    "shade",
    "draw_scene",
    "road_pixels",
    "BACKGROUNDS",
]

Point = tuple[float, float]
RGB = tuple[int, int, int]

#: background name -> (base colour, second colour, pattern)
BACKGROUNDS: dict[str, tuple[RGB, RGB, str]] = {
    "field": ((92, 128, 62), (128, 140, 74), "stripes"),
    "water": ((38, 68, 104), (46, 82, 118), "blobs"),
    "urban": ((128, 126, 122), (150, 148, 142), "grid"),
    "soil": ((168, 144, 106), (150, 126, 92), "blobs"),
}


def shade(colour: Sequence[int], factor: float) -> RGB:
    """Scale a colour by ``factor`` and clip to [0, 255]."""
    return tuple(int(max(0, min(255, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def texture(rng: np.random.Generator, s: int, name: str) -> np.ndarray:
    """A (s, s, 3) uint8 background texture of kind ``name`` (see :data:`BACKGROUNDS`)."""
    base, second, pattern = BACKGROUNDS[name]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if pattern == "stripes":  # ploughed fields: parallel bands in a few parcels
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(10, 18)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        parcel = (xx > rng.uniform(0.3, 0.7)).astype(np.float32)
        t = np.where(parcel > 0, t, 1 - t) * 0.7
    elif pattern == "grid":  # urban ground: paved blocks separated by lighter lanes
        period = rng.uniform(0.18, 0.3)
        gx = (np.abs(((xx + rng.uniform(0, 1)) / period) % 1 - 0.5) > 0.45).astype(np.float32)
        gy = (np.abs(((yy + rng.uniform(0, 1)) / period) % 1 - 0.5) > 0.45).astype(np.float32)
        t = np.maximum(gx, gy)
    else:  # blobs: smooth low-frequency noise
        coarse = rng.random((5, 5)).astype(np.float32)
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((s, s), Image.Resampling.BICUBIC)
        t = np.asarray(img, dtype=np.float32) / 255.0
    t = t[..., None]
    out = np.asarray(base, np.float32) * (1 - t) + np.asarray(second, np.float32) * t
    return np.clip(out, 0, 255).astype(np.uint8)


def rect_points(cx: float, cy: float, w: float, h: float, angle: float) -> list[Point]:
    """Corners of a w x h rectangle centred at (cx, cy), rotated by ``angle`` radians."""
    c, s_ = math.cos(angle), math.sin(angle)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in corners]


def ship_points(cx: float, cy: float, length: float, width: float, angle: float) -> list[Point]:
    """A pointed hull (bow at +length/2 along ``angle``)."""
    c, s_ = math.cos(angle), math.sin(angle)
    hull = [
        (length / 2, 0.0),
        (length / 4, width / 2),
        (-length / 2, width * 0.4),
        (-length / 2, -width * 0.4),
        (length / 4, -width / 2),
    ]
    return [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in hull]


def curve_points(
    rng: np.random.Generator, s: int, *, vertical: bool, base: float, amplitude: float
) -> list[Point]:
    """A long smooth curve crossing the image edge to edge near ``base`` (fraction of s)."""
    freq = rng.uniform(0.6, 1.6)
    phase = rng.uniform(0, 2 * math.pi)
    tilt = rng.uniform(-0.12, 0.12)
    pts = []
    for t in np.linspace(-0.05, 1.05, 16):
        offset = base + tilt * (t - 0.5) + amplitude * math.sin(2 * math.pi * freq * t + phase)
        along, across = float(t) * s, offset * s
        pts.append((across, along) if vertical else (along, across))
    return pts


class Canvas:
    """An RGB canvas and a label canvas drawn in lockstep.

    Attributes:
        rgb: PIL RGB image (s x s). label: PIL "L" image, 0 = background, k = object k.
    """

    def __init__(self, background: np.ndarray) -> None:
        self.s = background.shape[0]
        self.rgb = Image.fromarray(background)
        self.label = Image.new("L", (self.s, self.s), 0)
        self._draw_rgb = ImageDraw.Draw(self.rgb)
        self._draw_label = ImageDraw.Draw(self.label)

    def polygon(self, points: Sequence[Point], colour: RGB, label: int) -> None:
        self._draw_rgb.polygon(list(points), fill=colour, outline=shade(colour, 0.6))
        self._draw_label.polygon(list(points), fill=label, outline=label)

    def ellipse(self, cx: float, cy: float, r: float, colour: RGB, label: int) -> None:
        box = [cx - r, cy - r, cx + r, cy + r]
        self._draw_rgb.ellipse(box, fill=colour, outline=shade(colour, 0.6))
        self._draw_label.ellipse(box, fill=label, outline=label)

    def line(self, points: Sequence[Point], width: int, colour: RGB, label: int) -> None:
        self._draw_rgb.line(list(points), fill=colour, width=width, joint="curve")
        self._draw_label.line(list(points), fill=label, width=width, joint="curve")

    def detail_line(self, points: Sequence[Point], colour: RGB, width: int = 1) -> None:
        """Draw on the RGB canvas only (texture inside an object's footprint)."""
        self._draw_rgb.line(list(points), fill=colour, width=width)

    def detail_ellipse(self, cx: float, cy: float, r: float, colour: RGB) -> None:
        self._draw_rgb.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour)

    def detail_polygon(self, points: Sequence[Point], colour: RGB) -> None:
        self._draw_rgb.polygon(list(points), outline=colour)

    def labels(self) -> np.ndarray:
        """(s, s) uint8 label map."""
        return np.asarray(self.label, dtype=np.uint8).copy()


#: colour name -> RGB of a compact object (a random offset of +-12 per channel is added)
_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (198, 46, 40),
    "blue": (40, 84, 204),
    "white": (238, 238, 232),
    "yellow": (232, 200, 40),
    "black": (30, 30, 34),
    "green": (46, 160, 70),
}


def draw_scene(
    specs: Sequence[dict[str, Any]], background: str, *, rng: np.random.Generator, size: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene: ``(image, labels)``, a (s, s, 3) uint8 picture and its (s, s) uint8 label map.

    ``specs`` are the objects in id order (object ``k`` is ``specs[k - 1]`` and label ``k``), each
    ``{"category", "colour", "geom"}``: ``geom["kind"]`` is "curve" (``pts``, ``width``, ``rgb``:
    roads and rivers), "circle" (``cx``, ``cy``, ``r``), or "rect", "ship", "court" (``pts``, the
    corners); ``colour`` names a palette colour (None for curves). Curves go first, under every
    compact object; then each object in id order, with its details (tank lids, court lines, roof
    and deck ridges). ``background`` names a texture of :data:`BACKGROUNDS`; ``size`` is the side
    s; Gaussian noise of std ``noise`` (0-255 scale) is added to the picture when ``noise > 0``.
    ``rng`` draws the texture, each object's colour offset and the noise, in that order.
    """
    canvas = Canvas(texture(rng, size, background))
    order = sorted(range(len(specs)), key=lambda i: specs[i]["geom"]["kind"] != "curve")
    for i in order:
        spec = specs[i]
        label, geom = i + 1, spec["geom"]
        if geom["kind"] == "curve":
            canvas.line(geom["pts"], geom["width"], geom["rgb"], label)
            if spec["category"] == "road" and geom["width"] >= 4:
                canvas.detail_line(geom["pts"][::2], shade(geom["rgb"], 1.35))
            continue
        red, green, blue = (
            int(c) for c in np.clip(np.asarray(_PALETTE[spec["colour"]]) + rng.integers(-12, 13, 3), 0, 255)
        )
        rgb = (red, green, blue)
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
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def road_pixels(specs: Sequence[dict[str, Any]], *, size: int) -> np.ndarray:
    """(s, s) bool: the pixels of the roads among ``specs`` (see :func:`draw_scene`), s = ``size``."""
    canvas = Canvas(np.zeros((size, size, 3), np.uint8))
    for i, spec in enumerate(specs):
        if spec["category"] == "road":
            canvas.line(spec["geom"]["pts"], spec["geom"]["width"], (255, 255, 255), i + 1)
    return canvas.labels() > 0
