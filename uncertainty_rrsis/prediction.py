"""What the model says about one (image, sentence) pair: :class:`ReferringPrediction` (the maps at the
image's size, the figures of the answer, the panel and the files), and :func:`rank_by_risk`.
:class:`~uncertainty_rrsis.inference.ReferringSegmenter` makes them.

Axis legend
    H, W: the image's own rows / columns
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .geo import GeoreferenceWarning, RasterInfo, require_rasterio, write_geotiff
from .viz import heat_colormap, render_panel

__all__ = ["PANEL_TILE", "ReferringPrediction", "rank_by_risk"]

#: Default side of a panel tile: panels of larger images are drawn at this size.
PANEL_TILE = 1024
_HEAT_ROWS = 512  # rows of the uncertainty heat map coloured at a time (bounds the memory)


@dataclass(frozen=True)
class ReferringPrediction:
    """What the model says about one (image, sentence) pair, at the image's own size.

    Attributes:
        sentence: the referring expression.
        image: (h, w, 3) uint8, the picture as decoded, for pictures: (H, W) for an image given in
            memory or decoded in full; smaller for a large JPEG decoded at a reduced scale.
        mask: (H, W) bool, the referred object (final logits > 0, i.e. probability > 0.5).
        probability: (H, W) float32 in [0, 1], the final foreground probability (after UDLR when
            the model has it).
        uncertainty: (H, W) float32 in [0, 1], ``U^p = sigmoid(U)``: where the model expects its
            mask to be wrong; None for a model without the scorer (the Base row).
        refine_mask: (H, W) float32 in [0, 1], UDLR's soft mask ``M`` (where the refinement head
            acted); None without UDLR (and for scenes segmented coarse to fine).
        valid: (H, W) bool, False at the nodata pixels of a raster (there the mask is False and the
            probability 0); None when every pixel is valid.
        raster: the input raster's :class:`~uncertainty_rrsis.geo.RasterInfo` (CRS, geotransform):
            :meth:`save` then writes GeoTIFFs on its grid; None for pictures.
        details: how a scene was segmented coarse to fine (windows, region, ...); None otherwise.
        failure_probability: the risk head's probability that this answer failed (IoU < 0.5); None
            for a model without the head (see :attr:`risk_score`).
        predicted_iou: the risk head's predicted IoU of this answer; None without the head.
    """

    sentence: str
    image: np.ndarray
    mask: torch.Tensor
    probability: torch.Tensor
    uncertainty: torch.Tensor | None
    refine_mask: torch.Tensor | None
    valid: torch.Tensor | None = None
    raster: RasterInfo | None = None
    details: dict[str, Any] | None = None
    failure_probability: float | None = None
    predicted_iou: float | None = None

    @property
    def mean_margin(self) -> float:
        """Mean margin ``1 - |2 p - 1|`` of the probability over the mask (over the valid pixels when the
        mask is empty): the free per-answer risk score every model has."""
        select = self.mask if self.mask_pixels else (self.valid if self.valid is not None else None)
        values = self.probability if select is None else self.probability[select]
        return float((1.0 - (2.0 * values.double() - 1.0).abs()).mean()) if values.numel() else 1.0

    @property
    def risk_score(self) -> float:
        """How likely this answer is wrong, for sorting and flagging: the risk head's failure probability
        when the model has the head, else the mean margin over the mask (:attr:`mean_margin`)."""
        return self.failure_probability if self.failure_probability is not None else self.mean_margin

    @property
    def mask_pixels(self) -> int:
        """Pixels of the mask."""
        return int(self.mask.sum())

    @property
    def mask_fraction(self) -> float:
        """The mask's share of the valid pixels (of all pixels when there is no nodata)."""
        total = int(self.valid.sum()) if self.valid is not None else self.mask.numel()
        return self.mask_pixels / total if total else 0.0

    def mean_uncertainty(self, where: torch.Tensor | None = None) -> float | None:
        """Mean ``U^p`` over the valid pixels (and ``where``, an (H, W) bool, when given); None without an
        uncertainty map or when no pixel is selected."""
        if self.uncertainty is None:
            return None
        select = self.valid
        if where is not None:
            select = where if select is None else select & where
        values = self.uncertainty if select is None else self.uncertainty[select]
        return float(values.double().mean()) if values.numel() else None

    def summary(self) -> dict[str, Any]:
        """The answer's figures: ``height``, ``width``, ``mask_pixels``, ``mask_share``, ``predicted_iou``,
        ``failure_probability``, ``mean_margin``, ``risk_score``, ``mean_uncertainty`` and its values
        ``_in_mask`` and ``_outside`` (what ``examples/predict.py`` lists for every answer)."""
        height, width = self.mask.shape
        return {"height": int(height), "width": int(width), "mask_pixels": self.mask_pixels,
                "mask_share": self.mask_fraction, "predicted_iou": self.predicted_iou,
                "failure_probability": self.failure_probability, "mean_margin": self.mean_margin,
                "risk_score": self.risk_score, "mean_uncertainty": self.mean_uncertainty(),
                "mean_uncertainty_in_mask": self.mean_uncertainty(self.mask),
                "mean_uncertainty_outside": self.mean_uncertainty(~self.mask)}

    def panel(self, *, tile_size: int | None = None) -> Image.Image:
        """The picture of :func:`uncertainty_rrsis.viz.render_panel`: image, prediction, ``U^p``, ``M``.

        ``tile_size`` defaults to the image's longer side, at most :data:`PANEL_TILE` (1024) pixels;
        the image and the maps are shrunk to the tile before drawing.
        """
        height, width = self.mask.shape
        side = tile_size or max(128, min(max(height, width), PANEL_TILE))
        scale = min(1.0, side / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))

        def shrink(x: torch.Tensor | None, *, binary: bool = False) -> torch.Tensor | None:
            if x is None or tuple(x.shape) == size:
                return x
            if binary:
                return F.interpolate(x[None, None].float(), size=size, mode="nearest-exact")[0, 0] > 0.5
            return F.interpolate(x[None, None].float(), size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0, 0]

        picture = self.image
        if picture.shape[:2] != size:
            picture = np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        caption = self.sentence
        if self.predicted_iou is not None and self.failure_probability is not None:
            caption += f"  [predicted IoU {self.predicted_iou:.2f}, failure {self.failure_probability:.0%}]"
        return render_panel(image=picture, sentence=caption, prediction=shrink(self.mask, binary=True),
                            uncertainty_prob=shrink(self.uncertainty), refine_mask=shrink(self.refine_mask),
                            tile_size=side)

    def save(self, prefix: str | Path, *, geotiff: bool | None = None) -> dict[str, Path]:
        """Write the mask, the uncertainty map (when there is one) and ``<prefix>_panel.png``; returns the
        paths by kind (``mask``, ``uncertainty``, ``panel``).

        As pictures (the default for pictures): ``<prefix>_mask.png`` (0 / 255) and
        ``<prefix>_uncertainty.png`` (heat map). As GeoTIFFs (``geotiff=True``; the default for
        rasters), with the CRS, geotransform and size of the input (extra ``geo``):
        ``<prefix>_mask.tif`` (uint8 0 / 255, nodata pixels 0 and marked in the file's internal
        mask) and ``<prefix>_uncertainty.tif`` (float32 ``U^p`` in [0, 1], nodata NaN). An input
        without a CRS gives files without georeferencing and a
        :class:`~uncertainty_rrsis.geo.GeoreferenceWarning`.
        """
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        if geotiff is None:
            geotiff = self.raster is not None
        if geotiff:
            return self._save_geotiff(prefix)
        paths = {"mask": prefix.with_name(prefix.name + "_mask.png")}
        Image.fromarray(self.mask.numpy().astype(np.uint8) * 255).save(paths["mask"])
        if self.uncertainty is not None:
            paths["uncertainty"] = prefix.with_name(prefix.name + "_uncertainty.png")
            values = self.uncertainty.numpy()
            heat = np.empty((*values.shape, 3), dtype=np.uint8)
            for row in range(0, values.shape[0], _HEAT_ROWS):  # in bands: the colour map works in float64
                heat[row : row + _HEAT_ROWS] = heat_colormap(values[row : row + _HEAT_ROWS])
            Image.fromarray(heat).save(paths["uncertainty"])
        paths["panel"] = prefix.with_name(prefix.name + "_panel.png")
        self.panel().save(paths["panel"])
        return paths

    def _save_geotiff(self, prefix: Path) -> dict[str, Path]:
        require_rasterio(f"writing the GeoTIFF outputs {prefix}_*.tif")
        valid = None if self.valid is None else self.valid.numpy()
        paths = {"mask": prefix.with_name(prefix.name + "_mask.tif")}
        what = f"image of {self.sentence!r}"
        write_geotiff(paths["mask"], self.mask.numpy().astype(np.uint8) * 255, self.raster, valid=valid, what=what)
        if self.uncertainty is not None:
            paths["uncertainty"] = prefix.with_name(prefix.name + "_uncertainty.tif")
            values = self.uncertainty.numpy().astype(np.float32, copy=valid is not None)
            if valid is not None:
                values[~valid] = np.nan
            with warnings.catch_warnings():  # one warning per prediction is enough
                warnings.simplefilter("ignore", GeoreferenceWarning)
                write_geotiff(paths["uncertainty"], values, self.raster, nodata=float("nan"), what=what)
        paths["panel"] = prefix.with_name(prefix.name + "_panel.png")
        self.panel().save(paths["panel"])
        return paths


def rank_by_risk(predictions: Sequence[ReferringPrediction], *, flag_above: float | None = None
                 ) -> list[tuple[ReferringPrediction, bool]]:
    """``predictions`` sorted from the most to the least likely wrong (:attr:`ReferringPrediction.risk_score`),
    each with whether it is flagged for a check by hand: its risk score is above ``flag_above`` (never
    flagged when ``flag_above`` is None). The order of equal scores is kept."""
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i].risk_score)
    return [(predictions[i], flag_above is not None and predictions[i].risk_score > flag_above) for i in order]
