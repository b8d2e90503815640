"""Segment scenes larger than the model's input: coarse to fine.

A referring expression speaks about the whole scene ("the leftmost ship"), so cutting the scene
into tiles and segmenting each on its own is wrong: every tile would find *its* leftmost ship.
:class:`SceneSegmenter` keeps the scene-level reading and adds detail:

1. **Whole-scene pass.** The scene is resized to the model's input side exactly as in training
   (this is the single-pass prediction of :class:`~uncertainty_rrsis.inference.ReferringSegmenter`)
   and gives logits ``L_c`` and the uncertainty ``U_c``.
2. **Region.** The referent's pixels ``L_c > 0`` together with the uncertain pixels connected to
   them that still give them a chance (``U^p_c > uncertainty_threshold`` and foreground
   probability ``> min_probability``): where the whole-scene pass is unsure of the referent's
   extent, the region widens. It then grows by ``margin`` native pixels: the region ``D``, whose
   connected parts are the candidate objects.
3. **Window pass.** Square windows of ``window_size`` native pixels (default: ``1 / zoom`` of the
   scene's longer side, ``zoom`` = 2, and never less than the model's input side; set
   ``window_size`` to the input side for native resolution) on a grid with ``overlap`` (default
   0.5); the windows that touch ``D`` are resized to the input side and segmented with the same
   sentence, in batches of ``window_batch``. Their logits (and uncertainty logits) are blended with
   a 2-D Hann weight ``w(y, x) = sin^2(pi (y + 0.5) / h) sin^2(pi (x + 0.5) / w)`` normalised by
   the sum of the weights: exactly one window's value at the scene border, a partition of unity
   inside it at 50 % overlap.
4. **Combination** (``combine``). Each window sees only a crop, and answers the sentence *about the
   crop* ("the leftmost ship" of the crop). ``"components"`` (default) lets the windows redraw a
   candidate object only where they agree with the whole-scene pass about it: inside each connected
   part of ``D`` the windows' logits replace the whole-scene logits when the IoU of the two masks
   there is at least ``agreement`` (0.3), and the whole-scene logits stay otherwise; so the windows
   sharpen the outline of the object the whole scene picked, and can neither add nor drop an
   object. ``"gate"`` takes the windows' logits everywhere inside ``D``; ``"gate_mean"`` averages
   windows and whole scene (in logit space) inside ``D``; ``"mean"`` averages them wherever windows
   ran; ``"windows"`` keeps the windows' logits wherever they ran (tiling inside the region).

Everything outside the windows' reach is the whole-scene pass, and a scene no larger than one
window in both dimensions gets the single-pass prediction unchanged. Memory: besides the scene's
own maps (the outputs: mask, probability, uncertainty) and the picture, the blending keeps one band
of rows, ``window + (window_batch - 1) * stride`` high and as wide as the region, whatever the
scene's size. ``benchmarks/large_scenes.py`` measures the modes and window sizes against the single
pass; the docs page "Segmenting real scenes" has the table and why the default is what it is.

Axis legend
    s: the model's input side   H, W: the scene's rows / columns   h, w: a window's
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._ops import resize_logits
from .data import ResizeNormalize
from .inference import ImageLike, LoadedImage, ReferringPrediction, ReferringSegmenter, check_sentences

__all__ = ["COMBINE_MODES", "SceneSegmenter", "connected_components", "hann_window", "window_starts"]

#: The ways to combine the windows' logits with the whole-scene pass (module docstring).
COMBINE_MODES = ("components", "gate", "gate_mean", "mean", "windows")


def hann_window(height: int, width: int) -> torch.Tensor:
    """(height, width) float32 blending weight ``sin^2(pi (y + 0.5) / height) * sin^2(pi (x + 0.5) / width)``:
    positive everywhere, largest at the centre; shifted by half its side it sums to one with itself."""
    def axis(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return (axis(height)[:, None] * axis(width)[None, :]).float()


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of ``window`` pixels every ``stride`` pixels along ``length`` pixels, the last one
    flush with the end (``[0]`` when ``window >= length``)."""
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, max(1, stride)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """8-connected components of an (h, w) bool map: labels 1..n (0 = background) as int64, and n.

    One pass over the pixels (``scipy.ndimage.label``), whatever the components' shapes: a road
    network or a river that winds over the whole scene costs what a blob of the same area does.
    Components are numbered in the order their first pixel appears, row by row.
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask.cpu().numpy().astype(bool), structure=np.ones((3, 3), dtype=bool))
    return torch.from_numpy(labels.astype(np.int64, copy=False)), int(count)


def _source_index(out_len: int, in_len: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices and weights (``align_corners=False``) of output pixels ``start..stop``."""
    src = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (in_len / out_len) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    return i0, (i0 + 1).clamp(max=in_len - 1), (src - i0).float()


def _coarse_crop(coarse: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
                 ) -> torch.Tensor:
    """Rows / columns ``[a, b)`` of ``resize_logits(coarse, size)`` for an (s_h, s_w) map, without the rest."""
    r0, r1, ly = _source_index(size[0], coarse.shape[0], *rows)
    c0, c1, lx = _source_index(size[1], coarse.shape[1], *cols)
    band = coarse[r0] * (1 - ly)[:, None] + coarse[r1] * ly[:, None]
    return band[:, c0] * (1 - lx) + band[:, c1] * lx


@dataclass(frozen=True)
class _Window:
    y: int
    x: int


class SceneSegmenter:
    """Scene + sentence -> :class:`~uncertainty_rrsis.inference.ReferringPrediction` at the scene's size,
    coarse to fine (module docstring).

    Args:
        segmenter: the :class:`~uncertainty_rrsis.inference.ReferringSegmenter` that runs the model
            (its batch size is the whole-scene pass's; its raster options read GeoTIFFs).
        window_size: native pixels per window side; default ``max(input side, ceil(longer side / zoom))``.
            The model's input side gives native resolution.
        zoom: how much closer the windows look than the whole-scene pass, when ``window_size`` is
            not given (default 2).
        overlap: share of a window its neighbour overlaps, in [0, 0.9] (default 0.5).
        margin: native pixels added around the region (default: a quarter of the window side).
        uncertainty_threshold: ``U^p`` above which an uncertain pixel connected to the referent
            widens the region.
        min_probability: the foreground probability such an uncertain pixel needs.
        combine: one of :data:`COMBINE_MODES` (default ``"components"``).
        agreement: ``"components"``: the IoU of the windows' and the whole scene's masks inside a
            candidate object above which the windows redraw it (default 0.3).
        window_batch: windows per forward pass (default: the segmenter's batch size).
        full_tiling: run every window of the grid whatever the region (the region is then the whole
            scene: with ``combine="windows"``, plain tiling), for comparisons.
    """

    def __init__(
        self,
        segmenter: ReferringSegmenter,
        *,
        window_size: int | None = None,
        zoom: float = 2.0,
        overlap: float = 0.5,
        margin: int | None = None,
        uncertainty_threshold: float = 0.5,
        min_probability: float = 0.1,
        combine: str = "components",
        agreement: float = 0.3,
        window_batch: int | None = None,
        full_tiling: bool = False,
    ) -> None:
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")
        if not 0.0 <= overlap <= 0.9:
            raise ValueError(f"overlap must be in [0, 0.9]; got {overlap}")
        if window_size is not None and window_size < 8:
            raise ValueError(f"window_size must be at least 8 pixels; got {window_size}")
        if zoom < 1.0:
            raise ValueError(f"zoom must be >= 1; got {zoom}")
        if margin is not None and margin < 0:
            raise ValueError(f"margin must be >= 0; got {margin}")
        self.segmenter = segmenter
        self.window_size = None if window_size is None else int(window_size)
        self.zoom = float(zoom)
        self.overlap = float(overlap)
        self.margin = None if margin is None else int(margin)
        self.uncertainty_threshold = float(uncertainty_threshold)
        self.min_probability = float(min_probability)
        self.combine = combine
        self.agreement = float(agreement)
        self.window_batch = int(window_batch or segmenter.batch_size)
        self.full_tiling = bool(full_tiling)
        if self.window_batch < 1:
            raise ValueError(f"window_batch must be >= 1; got {self.window_batch}")

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        tokenizer: Any | None = None,
        device: torch.device | str | None = None,
        segmenter_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SceneSegmenter:
        """Load a checkpoint folder (as :meth:`ReferringSegmenter.from_pretrained
        <uncertainty_rrsis.inference.ReferringSegmenter.from_pretrained>`, with ``segmenter_kwargs``);
        ``kwargs`` are this class's."""
        segmenter = ReferringSegmenter.from_pretrained(directory, tokenizer=tokenizer, device=device,
                                                       **(segmenter_kwargs or {}))
        return cls(segmenter, **kwargs)

    def window_side(self, size: tuple[int, int]) -> int:
        """The window side in native pixels for a scene of ``size`` = (H, W)."""
        if self.window_size is not None:
            return self.window_size
        return max(self.segmenter.image_size, math.ceil(max(size) / self.zoom))

    def settings(self) -> dict[str, Any]:
        """The coarse-to-fine settings, for reports."""
        return {"window_size": self.window_size, "zoom": self.zoom, "overlap": self.overlap, "margin": self.margin,
                "uncertainty_threshold": self.uncertainty_threshold, "min_probability": self.min_probability,
                "combine": self.combine, "agreement": self.agreement, "window_batch": self.window_batch,
                "full_tiling": self.full_tiling}

    @torch.no_grad()
    def __call__(self, image: ImageLike, sentences: str | Sequence[str]
                 ) -> ReferringPrediction | list[ReferringPrediction]:
        """Segment what each sentence refers to in one scene (one prediction per sentence; a list when
        ``sentences`` is a list). The scene is decoded in full (no reduced JPEG decode)."""
        single = isinstance(sentences, str)
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        scene = self.segmenter.load(image, reduce=False)
        check_sentences(sentences, [scene] * len(sentences))
        window = self.window_side(scene.size)
        if scene.size[0] <= window and scene.size[1] <= window:  # one window: the single pass
            return self.segmenter(scene, sentences[0] if single else sentences)
        seg = self.segmenter
        x = seg.transform.normalize(seg.transform.resize_image(scene.picture))[None]  # (1, 3, s, s)
        coarse: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        risks: list[tuple[float | None, float | None]] = []  # the whole-scene pass decides the referent
        for start in range(0, len(sentences), seg.batch_size):
            chunk = sentences[start : start + seg.batch_size]
            maps = seg.logits(x.expand(len(chunk), -1, -1, -1), seg.tokens(chunk))
            unc = maps.uncertainty
            coarse += [(maps.logits[b : b + 1].cpu(), None if unc is None else unc[b : b + 1].cpu())
                       for b in range(len(chunk))]
            risks += [(None if maps.failure is None else float(maps.failure[b]),
                       None if maps.quality is None else float(maps.quality[b])) for b in range(len(chunk))]
        pixels = np.asarray(scene.picture, dtype=np.uint8)
        results = [dataclasses.replace(self._refine(scene, pixels, sentence, window, *c), failure_probability=failure,
                                       predicted_iou=quality)
                   for sentence, c, (failure, quality) in zip(sentences, coarse, risks, strict=True)]
        return results[0] if single else results

    # ------------------------------------------------------------------------------ the region
    def region(self, coarse_logits: torch.Tensor, coarse_uncertainty: torch.Tensor | None,
               size: tuple[int, int], *, margin: int | None = None) -> torch.Tensor:
        """(s, s) bool: the region ``D`` on the whole-scene pass's grid, for a scene of ``size`` = (H, W).

        Args:
            coarse_logits: (1, 1, s, s) the whole-scene pass's logits.
            coarse_uncertainty: (1, 1, s, s) its uncertainty logits, or None.
            margin: native pixels (default: the segmenter's ``margin``, else a quarter of the window).
        """
        logits = coarse_logits[0, 0].float()
        if self.full_tiling:
            return torch.ones(logits.shape, dtype=torch.bool)
        found = logits > 0
        if coarse_uncertainty is not None and bool(found.any()):
            uncertain = torch.sigmoid(coarse_uncertainty[0, 0].float()) > self.uncertainty_threshold
            candidates = found | (uncertain & (torch.sigmoid(logits) > self.min_probability))
            labels, _ = connected_components(candidates)
            touching = torch.unique(labels[found])  # the uncertain parts connected to the referent
            found = torch.isin(labels, touching) & candidates
        if margin is None:
            margin = self.margin if self.margin is not None else self.window_side(size) // 4
        rows, cols = logits.shape
        ry = math.ceil(margin * rows / size[0]) if margin else 0
        rx = math.ceil(margin * cols / size[1]) if margin else 0
        if ry or rx:
            found = F.max_pool2d(found[None, None].float(), (2 * ry + 1, 2 * rx + 1), stride=1,
                                 padding=(ry, rx))[0, 0] > 0
        return found

    def _windows(self, region: torch.Tensor, size: tuple[int, int], window: int
                 ) -> tuple[list[_Window], int, int, int, int]:
        """The grid windows that touch the region, in row-major order; the window's (h, w), the strides."""
        height, width = size
        rows, cols = region.shape
        h, w = min(window, height), min(window, width)
        sy = max(1, round(h * (1.0 - self.overlap)))
        sx = max(1, round(w * (1.0 - self.overlap)))
        integral = F.pad(region.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))
        chosen = []
        for y in window_starts(height, h, sy):
            r0, r1 = (y * rows) // height, min(rows, -(-((y + h) * rows) // height))
            for x in window_starts(width, w, sx):
                c0, c1 = (x * cols) // width, min(cols, -(-((x + w) * cols) // width))
                if int(integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]) > 0:
                    chosen.append(_Window(y, x))
        return chosen, h, w, sy, sx

    # ------------------------------------------------------------------------------ the window pass
    def _refine(self, scene: LoadedImage, pixels: np.ndarray, sentence: str, window: int,
                coarse_logits: torch.Tensor, coarse_unc: torch.Tensor | None) -> ReferringPrediction:
        height, width = scene.size
        out_l = _new_at_size(coarse_logits, (height, width))  # (H, W): the whole-scene logits, then the output
        out_u = None if coarse_unc is None else _new_at_size(coarse_unc, (height, width))
        region = self.region(coarse_logits, coarse_unc, (height, width),
                             margin=self.margin if self.margin is not None else window // 4)
        windows, h, w, sy, sx = self._windows(region, (height, width), window)
        total = len(window_starts(height, h, sy)) * len(window_starts(width, w, sx))
        details: dict[str, Any] = {"mode": "coarse-to-fine", **self.settings(), "window_size": window,
                                   "windows": len(windows), "windows_full_tiling": total, "region": None}
        if windows:
            labels, count = connected_components(region)
            pass_ = _WindowPass(self, pixels, sentence, windows, h, w, sy, labels, count, out_l, out_u)
            details["region"] = pass_.run()
            if self.combine == "components":
                coarse_u = None if coarse_unc is None else coarse_unc[0, 0].float()
                kept = pass_.settle(coarse_logits[0, 0].float(), coarse_u)
                details.update(candidates=count, redrawn=kept)
        valid = None if scene.valid is None else torch.from_numpy(scene.valid)
        if valid is not None:
            out_l.masked_fill_(~valid, -torch.inf)
        mask = out_l > 0
        return ReferringPrediction(
            sentence=sentence, image=pixels, mask=mask, probability=out_l.sigmoid_(),
            uncertainty=None if out_u is None else out_u.sigmoid_(), refine_mask=None, valid=valid,
            raster=scene.raster, details=details,
        )


class _WindowPass:
    """The windows of one (scene, sentence): run in batches, blended band by band into the outputs."""

    def __init__(self, owner: SceneSegmenter, pixels: np.ndarray, sentence: str, windows: list[_Window], h: int,
                 w: int, sy: int, labels: torch.Tensor, count: int, out_l: torch.Tensor,
                 out_u: torch.Tensor | None) -> None:
        self.owner, self.pixels, self.windows, self.h, self.w, self.sy = owner, pixels, windows, h, w, sy
        self.labels, self.count, self.out_l, self.out_u = labels, count, out_l, out_u
        self.tokens = owner.segmenter.tokens([sentence])
        self.intersection = torch.zeros(count + 1, dtype=torch.int64)  # per candidate object
        self.union = torch.zeros(count + 1, dtype=torch.int64)
        height, width = out_l.shape
        self.x0 = min(win.x for win in windows)
        self.x1 = max(win.x for win in windows) + w
        rows, cols = labels.shape
        self.label_rows = torch.clamp(((torch.arange(height) + 0.5) * rows / height).long(), max=rows - 1)
        self.label_cols = torch.clamp(((torch.arange(self.x0, self.x1) + 0.5) * cols / width).long(), max=cols - 1)

    def run(self) -> list[int]:
        """Run the windows; returns the covered box ``[x0, y0, x1, y1]`` (native pixels, end exclusive)."""
        owner, h, w = self.owner, self.h, self.w
        seg = owner.segmenter
        height = self.out_l.shape[0]
        side = seg.image_size
        window = max(h, w)
        in_size = (h, w) if window == side else (max(1, round(h * side / window)), max(1, round(w * side / window)))
        transform = ResizeNormalize(image_size=in_size, backend=seg.transform.backend)
        weight = hann_window(h, w)
        width = self.x1 - self.x0
        cap = min(height, h + (owner.window_batch - 1) * self.sy)
        acc = torch.zeros(3, cap, width)  # weighted logits, weighted uncertainty logits, weights
        windows = self.windows
        base, i = windows[0].y, 0
        while i < len(windows):
            batch = [windows[i]]
            i += 1
            while i < len(windows) and len(batch) < owner.window_batch and windows[i].y + h - base <= cap:
                batch.append(windows[i])
                i += 1
            crops = torch.stack([
                transform.normalize(transform.resize_image(Image.fromarray(self.pixels[b.y : b.y + h, b.x : b.x + w])))
                for b in batch
            ])
            logits, unc = seg.logits(crops, self.tokens)[:2]
            logits = resize_logits(logits, (h, w)).cpu()
            unc = None if unc is None else resize_logits(unc, (h, w)).cpu()
            for k, b in enumerate(batch):
                r, c = b.y - base, b.x - self.x0
                acc[0, r : r + h, c : c + w] += weight * logits[k, 0]
                if unc is not None:
                    acc[1, r : r + h, c : c + w] += weight * unc[k, 0]
                acc[2, r : r + h, c : c + w] += weight
            following = windows[i].y if i < len(windows) else height
            done = min(following - base, cap)
            self._finish(acc[:, :done], base)
            acc = torch.cat([acc[:, done:], torch.zeros(3, done, width)], dim=1)
            base = following
        return [self.x0, windows[0].y, self.x1, min(height, windows[-1].y + h)]

    def _finish(self, acc: torch.Tensor, row: int) -> None:
        """Combine one finished band of blended window logits with the whole-scene logits, in place."""
        combine = self.owner.combine
        den = acc[2]
        rows = den.shape[0]
        covered = den > 0
        labels = self.labels[self.label_rows[row : row + rows]][:, self.label_cols]  # (rows, width)
        select = covered & (labels > 0) if combine in ("components", "gate", "gate_mean") else covered
        if not bool(select.any()):
            return
        band_l = self.out_l[row : row + rows, self.x0 : self.x1]
        windows_l = acc[0][select] / den[select]
        if combine == "components":  # the two masks per candidate object, for the decision in settle()
            ids = labels[select]
            ours, theirs = windows_l > 0, band_l[select] > 0
            self.intersection += torch.bincount(ids[ours & theirs], minlength=self.count + 1)
            self.union += torch.bincount(ids[ours | theirs], minlength=self.count + 1)
        targets = [(band_l, windows_l)]
        if self.out_u is not None:
            targets.append((self.out_u[row : row + rows, self.x0 : self.x1], acc[1][select] / den[select]))
        for band, blended in targets:
            if combine in ("mean", "gate_mean"):
                blended = 0.5 * (blended + band[select])
            band[select] = blended

    def settle(self, coarse_logits: torch.Tensor, coarse_unc: torch.Tensor | None) -> int:
        """``components``: give the candidate objects the windows do not agree on their whole-scene logits
        back; returns how many the windows redrew."""
        iou = self.intersection.double() / self.union.clamp(min=1).double()
        redrawn = (iou >= self.owner.agreement) & (self.union > 0)
        height, width = self.out_l.shape
        rows, cols = self.labels.shape
        for k in range(1, self.count + 1):
            if bool(redrawn[k]):
                continue
            where = (self.labels == k).nonzero()
            if where.numel() == 0:
                continue
            (r0, c0), (r1, c1) = where.amin(0).tolist(), (where.amax(0) + 1).tolist()
            y0, y1 = (r0 * height) // rows, min(height, -(-(r1 * height) // rows) + 1)
            x0, x1 = (c0 * width) // cols, min(width, -(-(c1 * width) // cols) + 1)
            mine = self.labels[self.label_rows[y0:y1]][:, _label_index(x0, x1, width, cols)] == k
            for out, coarse in ((self.out_l, coarse_logits), (self.out_u, coarse_unc)):
                if out is None or coarse is None:
                    continue
                crop = _coarse_crop(coarse, (height, width), (y0, y1), (x0, x1))
                out[y0:y1, x0:x1][mine] = crop[mine]
        return int(redrawn[1:].sum())


def _label_index(x0: int, x1: int, width: int, cols: int) -> torch.Tensor:
    return torch.clamp(((torch.arange(x0, x1) + 0.5) * cols / width).long(), max=cols - 1)


def _new_at_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, s, s) logits -> a new (H, W) float32 CPU tensor."""
    y = resize_logits(x.float(), size)
    return (y.clone() if y is x else y)[0, 0].cpu()
