"""The window pass of one (scene, sentence): windows run in batches, their logits blended with the Hann
weight band of rows by band of rows, each finished band combined with the whole-scene logits on a
canvas: the scene's maps in memory (:class:`MemoryCanvas`) or, for a scene written to files, a
temporary file of the bands the windows changed (:class:`SpillCanvas`).

Memory: the blending keeps one window's height of rows across the windows' columns (three float32
maps: weighted logits, weighted uncertainty logits, weights) and one window's maps at native
resolution, whatever the scene's size.

Axis legend
    h, w: a window's rows / columns   H, W: the scene's   s_h, s_w: the whole-scene pass's grid
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .._ops import resize_logits
from ..data import ResizeNormalize
from ..inference import ReferringSegmenter
from .grid import coarse_crop, hann_window, nearest_index

#: Rows combined at a time when a band of the blending is finished.
FINISH_ROWS = 256

#: ``crop(y, x, h, w)`` -> (h, w, 3) uint8: the scene's pixels of one window.
Crop = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Window:
    y: int
    x: int


class WindowOwner(Protocol):
    """What the window pass reads from its :class:`~.segmenter.SceneSegmenter`."""

    segmenter: ReferringSegmenter
    combine: str
    agreement: float
    window_batch: int

    def progress_bar(self, total: int, what: str, unit: str) -> Any:
        """A progress bar (``update``, ``close``) or None."""


class Canvas(Protocol):
    def band(self, row: int, rows: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The current (rows, x1 - x0) logits and uncertainty logits of rows ``row ..``, to change in place."""

    def done(self, row: int, rows: int) -> None:
        """The band given by :meth:`band` holds its final values."""


class MemoryCanvas:
    """The scene's (H, W) logits and uncertainty logits in memory: bands are views of them."""

    def __init__(self, logits: torch.Tensor, uncertainty: torch.Tensor | None) -> None:
        self.logits, self.uncertainty = logits, uncertainty

    def band(self, row: int, rows: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        unc = None if self.uncertainty is None else self.uncertainty[row : row + rows, x0:x1]
        return self.logits[row : row + rows, x0:x1], unc

    def done(self, row: int, rows: int) -> None:
        pass


class SpillCanvas:
    """The whole-scene logits at native resolution computed band by band (:func:`~.grid.coarse_crop`), and
    the bands the windows changed kept in a temporary file in ``folder`` (deleted on :meth:`close`).

    Args:
        logits, uncertainty: (s_h, s_w) the whole-scene pass's logits and uncertainty logits.
        size: the scene's (H, W).
        folder: where the temporary file goes (the outputs' folder: it holds up to 8 bytes per pixel
            of the windows' reach).
    """

    def __init__(self, logits: torch.Tensor, uncertainty: torch.Tensor | None, size: tuple[int, int],
                 folder: str | Path) -> None:
        self.logits, self.uncertainty, self.size = logits, uncertainty, size
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".scene-bands-")
        self._bands: list[tuple[int, int, int, int, int]] = []  # row, rows, x0, x1, offset
        self._current: tuple[int, int, int, torch.Tensor, torch.Tensor | None] | None = None

    def coarse(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole-scene logits and uncertainty logits of rows / columns ``[a, b)`` at native resolution."""
        unc = None if self.uncertainty is None else coarse_crop(self.uncertainty, self.size, rows, cols)
        return coarse_crop(self.logits, self.size, rows, cols), unc

    def band(self, row: int, rows: int, x0: int, x1: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, unc = self.coarse((row, row + rows), (x0, x1))
        self._current = (row, x0, x1, logits, unc)
        return logits, unc

    def done(self, row: int, rows: int) -> None:
        assert self._current is not None and self._current[0] == row
        _, x0, x1, logits, unc = self._current
        offset = self._file.seek(0, 2)
        self._file.write(logits.numpy().astype(np.float32, copy=False).tobytes())
        if unc is not None:
            self._file.write(unc.numpy().astype(np.float32, copy=False).tobytes())
        self._bands.append((row, rows, x0, x1, offset))
        self._current = None

    def stored(self, a: int, b: int) -> Iterator[tuple[int, int, int, torch.Tensor, torch.Tensor | None]]:
        """The changed values among rows ``[a, b)``: ``(first row, x0, x1, logits, uncertainty logits)`` pieces."""
        for row, rows, x0, x1, offset in self._bands:
            lo, hi = max(a, row), min(b, row + rows)
            if lo >= hi:
                continue
            width, count = x1 - x0, (hi - lo) * (x1 - x0)
            start = offset + (lo - row) * width * 4
            logits = self._read(start, count).reshape(hi - lo, width)
            unc = None
            if self.uncertainty is not None:
                unc = self._read(offset + rows * width * 4 + (lo - row) * width * 4, count).reshape(hi - lo, width)
            yield lo, x0, x1, logits, unc

    def _read(self, offset: int, count: int) -> torch.Tensor:
        self._file.seek(offset)
        return torch.from_numpy(np.frombuffer(self._file.read(count * 4), dtype=np.float32).copy())

    def close(self) -> None:
        self._file.close()


class WindowPass:
    """The windows of one (scene, sentence): run in batches, blended band by band onto a canvas.

    Args:
        owner: the :class:`~.segmenter.SceneSegmenter` (model, combine mode, batch size).
        crop: the scene's pixels of a window.
        sentence: the referring expression.
        windows: the windows to run, in row-major order.
        h, w: the windows' rows / columns.
        size: the scene's (H, W).
        labels: (s_h, s_w) int64 connected parts of the region ``D`` (0 = outside), ``count`` of them.
        canvas: where finished bands go.
    """

    def __init__(self, owner: WindowOwner, crop: Crop, sentence: str, windows: list[Window], h: int, w: int,
                 size: tuple[int, int], labels: torch.Tensor, count: int, canvas: Canvas) -> None:
        self.owner, self.crop, self.windows, self.h, self.w, self.size = owner, crop, windows, h, w, size
        self.labels, self.count, self.canvas = labels.to(torch.int32), count, canvas
        self.tokens = owner.segmenter.tokens([sentence])
        self.intersection = torch.zeros(count + 1, dtype=torch.int64)  # per candidate object
        self.union = torch.zeros(count + 1, dtype=torch.int64)
        self.x0 = min(win.x for win in windows)
        self.x1 = max(win.x for win in windows) + w
        rows, cols = labels.shape
        self.label_rows = nearest_index(0, size[0], size[0], rows)
        self.label_cols = nearest_index(self.x0, self.x1, size[1], cols)

    def run(self) -> list[int]:
        """Run the windows, with the owner's progress bar over them; returns the covered box
        ``[x0, y0, x1, y1]`` (native pixels, end exclusive)."""
        bar = self.owner.progress_bar(len(self.windows), "windows", "window")
        try:
            return self._run(bar)
        finally:
            if bar is not None:
                bar.close()

    def _run(self, bar: Any) -> list[int]:
        owner, h, w = self.owner, self.h, self.w
        seg = owner.segmenter
        height = self.size[0]
        side = seg.image_size
        window = max(h, w)
        in_size = (h, w) if window == side else (max(1, round(h * side / window)), max(1, round(w * side / window)))
        transform = ResizeNormalize(image_size=in_size, backend=seg.transform.backend)
        weight = hann_window(h, w)
        acc = torch.zeros(3, h, self.x1 - self.x0)  # rows base .. base + h: weighted logits, uncertainty, weights
        base = self.windows[0].y
        for start in range(0, len(self.windows), owner.window_batch):
            batch = self.windows[start : start + owner.window_batch]
            crops = torch.stack([transform.normalize(transform.resize_image(Image.fromarray(self.crop(b.y, b.x, h, w))))
                                 for b in batch])
            maps = seg.logits(crops, self.tokens)
            for k, b in enumerate(batch):
                if b.y > base:  # rows base .. b.y have every window they will get: final
                    done = min(b.y - base, h)
                    self._finish(acc[:, :done], base)
                    _shift_up(acc, done)
                    base = b.y
                c = b.x - self.x0
                acc[0, :, c : c + w].addcmul_(weight, resize_logits(maps.logits[k : k + 1], (h, w))[0, 0].cpu())
                if maps.uncertainty is not None:
                    unc = resize_logits(maps.uncertainty[k : k + 1], (h, w))[0, 0].cpu()
                    acc[1, :, c : c + w].addcmul_(weight, unc)
                acc[2, :, c : c + w] += weight
                if bar is not None:
                    bar.update(1)
        self._finish(acc[:, : min(h, height - base)], base)
        return [self.x0, self.windows[0].y, self.x1, min(height, self.windows[-1].y + h)]

    def _finish(self, acc: torch.Tensor, row: int) -> None:
        """Combine one finished band of blended window logits with the whole-scene logits on the canvas,
        :data:`FINISH_ROWS` rows at a time (the temporaries of a band as tall as a window would cost
        several times the blending band itself)."""
        for start in range(0, acc.shape[1], FINISH_ROWS):
            self._finish_rows(acc[:, start : start + FINISH_ROWS], row + start)

    def _finish_rows(self, acc: torch.Tensor, row: int) -> None:
        combine = self.owner.combine
        den = acc[2]
        rows = den.shape[0]
        covered = den > 0
        labels = self.labels[self.label_rows[row : row + rows]][:, self.label_cols]  # (rows, width)
        select = covered & (labels > 0) if combine in ("components", "gate", "gate_mean") else covered
        if not bool(select.any()):
            return
        band_l, band_u = self.canvas.band(row, rows, self.x0, self.x1)
        windows_l = acc[0][select] / den[select]
        if combine == "components":  # the two masks per candidate object, for the decision in redrawn()
            ids = labels[select].long()
            ours, theirs = windows_l > 0, band_l[select] > 0
            self.intersection += torch.bincount(ids[ours & theirs], minlength=self.count + 1)
            self.union += torch.bincount(ids[ours | theirs], minlength=self.count + 1)
        targets = [(band_l, windows_l)]
        if band_u is not None:
            targets.append((band_u, acc[1][select] / den[select]))
        for band, blended in targets:
            if combine in ("mean", "gate_mean"):
                blended = 0.5 * (blended + band[select])
            band[select] = blended
        self.canvas.done(row, rows)

    def redrawn(self) -> torch.Tensor:
        """``components``: (count + 1,) bool, the candidate objects the windows redraw (IoU of the two masks
        there at least ``agreement``); entry 0 (outside the region) is False."""
        iou = self.intersection.double() / self.union.clamp(min=1).double()
        redrawn = (iou >= self.owner.agreement) & (self.union > 0)
        redrawn[0] = False
        return redrawn

    def settle(self, out_l: torch.Tensor, out_u: torch.Tensor | None, coarse_logits: torch.Tensor,
               coarse_unc: torch.Tensor | None) -> int:
        """``components``, scene in memory: give the candidate objects the windows do not redraw their
        whole-scene logits back; returns how many the windows redrew."""
        redrawn = self.redrawn()
        height, width = self.size
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
            mine = self.labels[self.label_rows[y0:y1]][:, nearest_index(x0, x1, width, cols)] == k
            for out, coarse in ((out_l, coarse_logits), (out_u, coarse_unc)):
                if out is None or coarse is None:
                    continue
                crop = coarse_crop(coarse, (height, width), (y0, y1), (x0, x1))
                out[y0:y1, x0:x1][mine] = crop[mine]
        return int(redrawn.sum())


def _shift_up(acc: torch.Tensor, rows: int) -> None:
    """Move ``acc``'s rows up by ``rows`` in place (chunks no taller than the shift never overlap) and zero
    the freed rows at the bottom."""
    height = acc.shape[1]
    for top in range(0, height - rows, rows):
        n = min(rows, height - rows - top)
        acc[:, top : top + n].copy_(acc[:, top + rows : top + rows + n])
    acc[:, max(0, height - rows) :].zero_()
