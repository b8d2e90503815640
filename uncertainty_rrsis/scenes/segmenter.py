"""The coarse-to-fine scene segmenter (:mod:`uncertainty_rrsis.scenes` describes the method)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._ops import resize_logits
from ..inference import ImageLike, LoadedImage, ReferringPrediction, ReferringSegmenter, check_sentences
from .grid import connected_components, window_starts
from .window_pass import MemoryCanvas, Window, WindowPass

__all__ = ["COMBINE_MODES", "SceneSegmenter"]

#: The ways to combine the windows' logits with the whole-scene pass (module docstring).
COMBINE_MODES = ("components", "gate", "gate_mean", "mean", "windows")


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
        windows: False: the whole-scene pass alone (the single-pass prediction at the scene's
            size), e.g. to write a large scene by windows with :meth:`segment_file`.
        progress: progress bars over the windows (and, in :meth:`segment_file`, over the rows
            written).
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
        windows: bool = True,
        progress: bool = False,
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
        self.windows = bool(windows)
        self.progress = bool(progress)
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
        """Load a checkpoint folder or a Hub id (as :meth:`ReferringSegmenter.from_pretrained
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
                "full_tiling": self.full_tiling, "windows": self.windows}

    @torch.no_grad()
    def __call__(self, image: ImageLike, sentences: str | Sequence[str]
                 ) -> ReferringPrediction | list[ReferringPrediction]:
        """Segment what each sentence refers to in one scene (one prediction per sentence; a list when
        ``sentences`` is a list). The scene is decoded in full (no reduced JPEG decode) and its maps are
        held in memory; :meth:`segment_file` writes a raster's maps band by band instead."""
        single = isinstance(sentences, str)
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        scene = self.segmenter.load(image, reduce=False)
        check_sentences(sentences, [scene] * len(sentences))
        window = self.window_side(scene.size)
        if not self.windows or (scene.size[0] <= window and scene.size[1] <= window):  # the single pass
            return self.segmenter(scene, sentences[0] if single else sentences)
        seg = self.segmenter
        x = seg.transform.normalize(seg.transform.resize_image(scene.picture))[None]  # (1, 3, s, s)
        pixels = np.asarray(scene.picture, dtype=np.uint8)
        results = []
        for sentence, coarse in zip(sentences, self.whole_scene(x, sentences), strict=True):
            logits, unc, failure, quality = coarse
            prediction = self._refine(scene, pixels, sentence, window, logits, unc)
            results.append(dataclasses.replace(prediction, failure_probability=failure, predicted_iou=quality))
        return results[0] if single else results

    def whole_scene(self, x: torch.Tensor, sentences: list[str]
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None, float | None, float | None]]:
        """The whole-scene pass of every sentence on one scene's model input ``x`` (1, 3, s, s): per sentence
        its (1, 1, s, s) logits and uncertainty logits (CPU) and the risk head's failure probability and
        predicted IoU (None without the head). The whole-scene pass decides the referent, so its risk is
        the answer's."""
        seg = self.segmenter
        out: list[tuple[torch.Tensor, torch.Tensor | None, float | None, float | None]] = []
        for start in range(0, len(sentences), seg.batch_size):
            chunk = sentences[start : start + seg.batch_size]
            maps = seg.logits(x.expand(len(chunk), -1, -1, -1), seg.tokens(chunk))
            for b in range(len(chunk)):
                out.append((maps.logits[b : b + 1].cpu(),
                            None if maps.uncertainty is None else maps.uncertainty[b : b + 1].cpu(),
                            None if maps.failure is None else float(maps.failure[b]),
                            None if maps.quality is None else float(maps.quality[b])))
        return out

    def segment_file(self, path: str | Path, sentences: str | Sequence[str], prefixes: str | Path | Sequence[str | Path]
                     ) -> Any:
        """Segment a raster (GeoTIFF, or any file GDAL reads) read by windows, and write each sentence's mask,
        uncertainty map and panel to ``<prefix>_mask.tif``, ``_uncertainty.tif`` and ``_panel.png`` band
        by band: a scene larger than memory works (:func:`~uncertainty_rrsis.scenes.files.segment_raster`).
        The segmenter's raster options (``bands``, ``window``, ``stretch``) say how to read it. Returns a
        :class:`~uncertainty_rrsis.scenes.SceneResult` per sentence (one when ``sentences`` is a str)."""
        from .files import segment_raster

        single = isinstance(sentences, str)
        sentence_list = [sentences] if isinstance(sentences, str) else list(sentences)
        prefix_list = [prefixes] if isinstance(prefixes, (str, Path)) else list(prefixes)
        if len(prefix_list) != len(sentence_list):
            raise ValueError(f"got {len(sentence_list)} sentences and {len(prefix_list)} output prefixes; give one "
                             "prefix per sentence")
        results = segment_raster(self, path, sentence_list, [Path(p) for p in prefix_list])
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

    def grid_windows(self, region: torch.Tensor, size: tuple[int, int], window: int
                     ) -> tuple[list[Window], int, int, int, int]:
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
                    chosen.append(Window(y, x))
        return chosen, h, w, sy, sx

    # ------------------------------------------------------------------------------ the window pass
    def plan(self, coarse_logits: torch.Tensor, coarse_unc: torch.Tensor | None, size: tuple[int, int], window: int
             ) -> tuple[list[Window], int, int, dict[str, Any], torch.Tensor]:
        """The windows to run for one sentence: ``(windows, h, w, details, region)``."""
        region = self.region(coarse_logits, coarse_unc, size, margin=self.margin if self.margin is not None
                             else window // 4)
        windows, h, w, sy, sx = self.grid_windows(region, size, window)
        total = len(window_starts(size[0], h, sy)) * len(window_starts(size[1], w, sx))
        details: dict[str, Any] = {"mode": "coarse-to-fine", **self.settings(), "window_size": window,
                                   "windows": len(windows), "windows_full_tiling": total, "region": None}
        return windows, h, w, details, region

    def progress_bar(self, total: int, what: str, unit: str) -> Any:
        """A progress bar (tqdm, on stderr, gone when done) when :attr:`progress` is on, else None."""
        if not self.progress or total < 1:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, desc=what, unit=unit, leave=False)

    def _refine(self, scene: LoadedImage, pixels: np.ndarray, sentence: str, window: int,
                coarse_logits: torch.Tensor, coarse_unc: torch.Tensor | None) -> ReferringPrediction:
        height, width = scene.size
        out_l = _new_at_size(coarse_logits, (height, width))  # (H, W): the whole-scene logits, then the output
        out_u = None if coarse_unc is None else _new_at_size(coarse_unc, (height, width))
        windows, h, w, details, region = self.plan(coarse_logits, coarse_unc, (height, width), window)
        if windows:
            labels, count = connected_components(region)

            def crop(y: int, x: int, rows: int, cols: int) -> np.ndarray:
                return pixels[y : y + rows, x : x + cols]

            pass_ = WindowPass(self, crop, sentence, windows, h, w, (height, width), labels, count,
                               MemoryCanvas(out_l, out_u))
            details["region"] = pass_.run()
            if self.combine == "components":
                coarse_u = None if coarse_unc is None else coarse_unc[0, 0].float()
                kept = pass_.settle(out_l, out_u, coarse_logits[0, 0].float(), coarse_u)
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


def _new_at_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, s, s) logits -> a new (H, W) float32 CPU tensor."""
    y = resize_logits(x.float(), size)
    return (y.clone() if y is x else y)[0, 0].cpu()
