"""A raster file in, georeferenced maps out, band by band: scenes larger than memory.

:func:`segment_raster` (``SceneSegmenter.segment_file``) never holds a scene-sized map:

1. **Read.** The raster is opened once (:class:`~uncertainty_rrsis.geo.RasterReader`: bands,
   stretch, nodata as for a whole read; the stretch's ranges from the whole area).
2. **Whole-scene pass.** The model's input is made from an overview of the scene: the picture
   itself up to :data:`OVERVIEW_PIXELS` pixels (then the input is exactly the single pass's), else
   the mean of k x k blocks with the smallest k that fits, read in bands of rows; then resized to
   the input side as in training.
3. **Windows** (coarse to fine, when the scene is larger than a window): each window is read from
   the file when it runs; the bands of rows they change are kept in a temporary file next to the
   outputs (:class:`~.window_pass.SpillCanvas`) until the candidates are settled.
4. **Write.** Band of :data:`STRIP_ROWS` rows by band: the whole-scene logits at native resolution
   (bilinear), the windows' values where they count, nodata, then the mask (uint8 0 / 255, nodata
   in the internal mask) and ``U^p`` (float32, nodata NaN) written into GeoTIFFs on the input's grid;
   the figures of the answer (mask area, mean margin, mean ``U^p`` in and outside the mask) and the
   panel's downsized maps are gathered on the way.

Peak memory: the model, one window (its pixels and its maps at native resolution), the blending
band (a window's height of rows across the windows' columns, 12 bytes a pixel) and one written band.

Axis legend
    H, W: the scene's rows / columns   s: the model's input side
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ..geo import GeoreferenceWarning, GeoTiffWriter, RasterInfo, RasterReader
from ..inference import PANEL_TILE, check_sentences
from ..viz import render_panel
from .grid import connected_components, nearest_index
from .window_pass import SpillCanvas, Window, WindowOwner, WindowPass


class SceneOwner(WindowOwner, Protocol):
    """What writing a raster reads from its :class:`~.segmenter.SceneSegmenter`."""

    windows: bool

    def window_side(self, size: tuple[int, int]) -> int: ...

    def whole_scene(self, x: torch.Tensor, sentences: list[str]
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None, float | None, float | None]]: ...

    def plan(self, coarse_logits: torch.Tensor, coarse_unc: torch.Tensor | None, size: tuple[int, int],
             window: int) -> tuple[list[Window], int, int, dict[str, Any], torch.Tensor]: ...

    def progress_bar(self, total: int, what: str, unit: str) -> Any: ...

__all__ = ["OVERVIEW_PIXELS", "STRIP_ROWS", "SceneResult", "segment_raster"]

#: Pixels of the overview the whole-scene pass is made from (4096 x 4096).
OVERVIEW_PIXELS = 1 << 24
#: Rows written at a time.
STRIP_ROWS = 512


@dataclass(frozen=True)
class SceneResult:
    """What the model says about one (raster, sentence) pair, written to files (:func:`segment_raster`).

    Attributes:
        sentence: the referring expression.
        size: the area's (H, W) (the scene, or the window read).
        raster: the input's :class:`~uncertainty_rrsis.geo.RasterInfo` (the outputs' grid).
        files: the written files by kind: ``mask``, ``uncertainty`` (without the scorer: absent),
            ``panel``.
        mask_pixels: pixels of the mask.
        valid_pixels: pixels that are not nodata.
        mean_margin: mean ``1 - |2 p - 1|`` over the mask (over the valid pixels when it is empty).
        mean_uncertainty, mean_uncertainty_in_mask, mean_uncertainty_outside: mean ``U^p`` over the
            valid pixels, inside and outside the mask (None without the scorer or without pixels).
        failure_probability, predicted_iou: the risk head's, from the whole-scene pass (None
            without the head).
        details: how the scene was segmented (mode, windows, region, ...).
    """

    sentence: str
    size: tuple[int, int]
    raster: RasterInfo
    files: dict[str, Path]
    mask_pixels: int
    valid_pixels: int
    mean_margin: float
    mean_uncertainty: float | None = None
    mean_uncertainty_in_mask: float | None = None
    mean_uncertainty_outside: float | None = None
    failure_probability: float | None = None
    predicted_iou: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mask_fraction(self) -> float:
        """The mask's share of the valid pixels."""
        return self.mask_pixels / self.valid_pixels if self.valid_pixels else 0.0

    @property
    def risk_score(self) -> float:
        """The failure probability when the model has the risk head, else the mean margin."""
        return self.failure_probability if self.failure_probability is not None else self.mean_margin

    def summary(self) -> dict[str, Any]:
        """The answer's figures (the keys of :meth:`ReferringPrediction.summary
        <uncertainty_rrsis.inference.ReferringPrediction.summary>`)."""
        return {"height": self.size[0], "width": self.size[1], "mask_pixels": self.mask_pixels,
                "mask_share": self.mask_fraction, "predicted_iou": self.predicted_iou,
                "failure_probability": self.failure_probability, "mean_margin": self.mean_margin,
                "risk_score": self.risk_score, "mean_uncertainty": self.mean_uncertainty,
                "mean_uncertainty_in_mask": self.mean_uncertainty_in_mask,
                "mean_uncertainty_outside": self.mean_uncertainty_outside}


class _BlockMeans:
    """Sums over f x f blocks of (H, W) maps given band of rows by band of rows (for the panel)."""

    def __init__(self, height: int, width: int, factor: int, names: Sequence[str]) -> None:
        self.f = factor
        self.shape = (math.ceil(height / factor), math.ceil(width / factor))
        self.sums = {name: np.zeros(self.shape) for name in names}
        self.cols = np.arange(0, width, factor)

    def add(self, row: int, name: str, values: np.ndarray) -> None:
        ids = np.arange(row, row + values.shape[0]) // self.f
        starts = np.flatnonzero(np.diff(ids, prepend=-1))
        block = np.add.reduceat(np.add.reduceat(values.astype(np.float64), self.cols, axis=1), starts, axis=0)
        self.sums[name][ids[starts]] += block


def segment_raster(owner: SceneOwner, path: str | Path, sentences: list[str], prefixes: list[Path]
                   ) -> list[SceneResult]:
    """Segment each sentence on the raster ``path`` and write its maps to ``<prefix>_*`` (module docstring).

    Args:
        owner: the :class:`~.segmenter.SceneSegmenter` (its segmenter's raster options read the file; its
            ``windows`` option says whether windows refine the whole-scene pass).
        path: the raster.
        sentences: the referring expressions.
        prefixes: one output prefix per sentence.
    """
    seg = owner.segmenter
    check_sentences(sentences, [str(path)] * len(sentences))
    with RasterReader(path, bands=seg.bands, window=seg.window, stretch=seg.stretch) as reader:
        overview, _ = reader.overview(OVERVIEW_PIXELS)
        x = seg.transform.normalize(seg.transform.resize_image(Image.fromarray(overview)))[None]
        window = owner.window_side(reader.size)
        refine = owner.windows and not (reader.size[0] <= window and reader.size[1] <= window)
        results = []
        for sentence, prefix, coarse in zip(sentences, prefixes, owner.whole_scene(x, sentences), strict=True):
            logits, unc, failure, quality = coarse
            results.append(_one(owner, reader, overview, sentence, prefix, logits, unc, window if refine else None,
                                failure, quality))
    return results


def _one(owner: SceneOwner, reader: RasterReader, overview: np.ndarray, sentence: str, prefix: Path,
         logits: torch.Tensor, unc: torch.Tensor | None, window: int | None, failure: float | None,
         quality: float | None) -> SceneResult:
    size = reader.size
    prefix.parent.mkdir(parents=True, exist_ok=True)
    canvas = SpillCanvas(logits[0, 0].float(), None if unc is None else unc[0, 0].float(), size, prefix.parent)
    details: dict[str, Any] = {"mode": "single"}
    restore: tuple[torch.Tensor, torch.Tensor] | None = None  # (labels, not-redrawn lookup)
    try:
        if window is not None:
            windows, h, w, details, region = owner.plan(logits, unc, size, window)
            if windows:
                labels, count = connected_components(region)

                def crop(y: int, x: int, rows: int, cols: int) -> np.ndarray:
                    return reader.read(y, x, rows, cols)[0]

                pass_ = WindowPass(owner, crop, sentence, windows, h, w, size, labels, count, canvas)
                details["region"] = pass_.run()
                if owner.combine == "components":
                    redrawn = pass_.redrawn()
                    keep_coarse = ~redrawn
                    keep_coarse[0] = False
                    restore = (labels, keep_coarse)
                    details.update(candidates=count, redrawn=int(redrawn.sum()))
        return _write(owner, reader, overview, canvas, sentence, prefix, restore, details, failure, quality)
    finally:
        canvas.close()


def _write(owner: SceneOwner, reader: RasterReader, overview: np.ndarray, canvas: SpillCanvas, sentence: str,
           prefix: Path, restore: tuple[torch.Tensor, torch.Tensor] | None, details: dict[str, Any],
           failure: float | None, quality: float | None) -> SceneResult:
    height, width = reader.size
    has_unc = canvas.uncertainty is not None
    files = {"mask": prefix.with_name(prefix.name + "_mask.tif")}
    if has_unc:
        files["uncertainty"] = prefix.with_name(prefix.name + "_uncertainty.tif")
    files["panel"] = prefix.with_name(prefix.name + "_panel.png")
    factor = max(1, math.ceil(max(height, width) / PANEL_TILE))
    blocks = _BlockMeans(height, width, factor, ["mask", "u", "valid", "all"])
    label_cols = None if restore is None else nearest_index(0, width, width, restore[0].shape[1])
    sums = dict.fromkeys(("mask", "valid", "margin_mask", "margin_valid", "u_valid", "u_mask"), 0.0)
    what = f"image of {sentence!r}"
    unc_writer = None
    bar = owner.progress_bar(height, "writing", "row")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoreferenceWarning)  # one warning per answer: the mask's
        if has_unc:
            unc_writer = GeoTiffWriter(files["uncertainty"], reader.info, dtype="float32", nodata=float("nan"),
                                       what=what)
    try:
        with GeoTiffWriter(files["mask"], reader.info, dtype="uint8", with_mask=reader.may_have_nodata,
                           what=what) as mask_writer:
            for a in range(0, height, STRIP_ROWS):
                b = min(height, a + STRIP_ROWS)
                lg, un = canvas.coarse((a, b), (0, width))
                before = (lg.clone(), None if un is None else un.clone()) if restore is not None else None
                changed = False
                for lo, x0, x1, s_l, s_u in canvas.stored(a, b):
                    lg[lo - a : lo - a + s_l.shape[0], x0:x1] = s_l
                    if un is not None and s_u is not None:
                        un[lo - a : lo - a + s_u.shape[0], x0:x1] = s_u
                    changed = True
                if restore is not None and changed and before is not None and label_cols is not None:
                    labels, keep_coarse = restore
                    rows = nearest_index(a, b, height, labels.shape[0])
                    keep = keep_coarse[labels[rows][:, label_cols]]
                    lg[keep] = before[0][keep]
                    if un is not None and before[1] is not None:
                        un[keep] = before[1][keep]
                valid_np = reader.valid(a, 0, b - a, width)
                valid = None if valid_np is None else torch.from_numpy(valid_np)
                if valid is not None:
                    lg.masked_fill_(~valid, -torch.inf)
                mask = lg > 0
                prob = torch.sigmoid(lg)
                margin = (1.0 - (2.0 * prob.double() - 1.0).abs())
                mask_np = mask.numpy()
                mask_writer.write(a, mask_np.astype(np.uint8) * 255, valid_np)
                n_valid = (b - a) * width if valid is None else int(valid.sum())
                sums["mask"] += int(mask.sum())
                sums["valid"] += n_valid
                sums["margin_mask"] += float(margin[mask].sum())
                sums["margin_valid"] += float(margin.sum() if valid is None else margin[valid].sum())
                blocks.add(a, "mask", mask_np)
                ones = np.ones(mask_np.shape)
                blocks.add(a, "all", ones)
                blocks.add(a, "valid", ones if valid_np is None else valid_np)
                if un is not None and unc_writer is not None:
                    up = torch.sigmoid(un)
                    up_np = up.numpy().astype(np.float32)
                    sums["u_mask"] += float(up.double()[mask].sum())
                    if valid_np is not None:
                        up_np[~valid_np] = np.nan
                        sums["u_valid"] += float(up.double()[valid].sum())
                    else:
                        sums["u_valid"] += float(up.double().sum())
                    unc_writer.write(a, up_np)
                    blocks.add(a, "u", np.nan_to_num(up_np, nan=0.0))
                if bar is not None:
                    bar.update(b - a)
    finally:
        if unc_writer is not None:
            unc_writer.close()
        if bar is not None:
            bar.close()
    n_mask, n_valid = int(sums["mask"]), int(sums["valid"])
    if n_mask:
        mean_margin = sums["margin_mask"] / n_mask
    else:
        mean_margin = sums["margin_valid"] / n_valid if n_valid else 1.0

    def mean(total: float, count: int) -> float | None:
        return total / count if has_unc and count else None

    result = SceneResult(
        sentence=sentence, size=(height, width), raster=reader.info, files=files, mask_pixels=n_mask,
        valid_pixels=n_valid, mean_margin=mean_margin, mean_uncertainty=mean(sums["u_valid"], n_valid),
        mean_uncertainty_in_mask=mean(sums["u_mask"], n_mask),
        mean_uncertainty_outside=mean(sums["u_valid"] - sums["u_mask"], n_valid - n_mask),
        failure_probability=failure, predicted_iou=quality, details=details,
    )
    _panel(result, overview, blocks, has_unc).save(files["panel"])
    return result


def _panel(result: SceneResult, overview: np.ndarray, blocks: _BlockMeans, has_unc: bool) -> Image.Image:
    """The panel (image, prediction, ``U^p``) from the overview and the block means of the written maps."""
    th, tw = blocks.shape
    prediction = torch.from_numpy(blocks.sums["mask"] / blocks.sums["all"] >= 0.5)
    count = np.maximum(blocks.sums["valid"], 1.0)
    uncertainty = torch.from_numpy((blocks.sums["u"] / count).astype(np.float32)) if has_unc else None
    image = np.asarray(Image.fromarray(overview).resize((tw, th), Image.Resampling.BILINEAR))
    caption = result.sentence
    if result.predicted_iou is not None and result.failure_probability is not None:
        caption += f"  [predicted IoU {result.predicted_iou:.2f}, failure {result.failure_probability:.0%}]"
    side = max(128, min(max(result.size), PANEL_TILE))
    return render_panel(image=image, sentence=caption, prediction=prediction, uncertainty_prob=uncertainty,
                        tile_size=side)
