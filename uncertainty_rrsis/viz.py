"""Fig. 6-style panels: sentence, image, ground truth, prediction, ``U^p`` and ``M``.

Rendered with PIL only (no matplotlib). A panel is one row of tiles under the sentence:

    image | ground truth (red overlay) | prediction (green overlay) | U^p heat map | M map

``U^p`` uses :func:`heat_colormap` (black -> purple -> red -> yellow -> white, a
perceptually ordered ramp implemented here); ``M`` (UDLR's refinement mask, optional)
is shown in grey levels.

Shapes: image (3, H, W) normalised float (or uint8 (H, W, 3)); target, prediction
(H, W) bool; uncertainty_prob, refine_mask (H, W) float in [0, 1]; maps of another size
are resized (bilinear for probabilities, nearest for masks) to the image size.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["heat_colormap", "render_panel", "save_panel", "save_grid", "GT_COLOUR", "PRED_COLOUR"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
GT_COLOUR = (255, 0, 0)
PRED_COLOUR = (0, 255, 0)
_ALPHA = 0.5
_STOPS = np.array(
    [
        [0.00, 0, 0, 0],
        [0.25, 87, 16, 110],
        [0.50, 188, 55, 84],
        [0.75, 249, 142, 9],
        [1.00, 252, 255, 164],
    ],
    dtype=np.float64,
)


def heat_colormap(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Map values in [0, 1] (any shape ``...``) to RGB uint8 (``..., 3``), piecewise linear."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    out = np.stack([np.interp(v, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)], axis=-1)
    return np.rint(out).astype(np.uint8)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _image_rgb(image: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    arr = _to_numpy(image)
    if arr.dtype == np.uint8:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"a uint8 image must be (H, W, 3); got {arr.shape}")
        return arr
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"a float image must be (3, H, W) and normalised; got {arr.shape}")
    arr = arr.astype(np.float64) * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    return np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def _map(x: Any, size: tuple[int, int], *, binary: bool, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (H, W); got {arr.shape}")
    height, width = size
    if arr.shape != (height, width):
        if binary:
            img = Image.fromarray(arr.astype(bool).astype(np.uint8) * 255).resize(
                (width, height), Image.Resampling.NEAREST
            )
            return np.asarray(img) > 127
        img = Image.fromarray(arr.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img)
    return arr.astype(bool) if binary else arr.astype(np.float64)


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float64)
    out[mask] = (1 - _ALPHA) * out[mask] + _ALPHA * np.asarray(colour, dtype=np.float64)
    return np.rint(out).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_panel(
    *,
    image: Any,
    sentence: str,
    target: Any = None,
    prediction: Any,
    uncertainty_prob: Any = None,
    refine_mask: Any = None,
    mean: Sequence[float] = _MEAN,
    std: Sequence[float] = _STD,
    tile_size: int | None = None,
) -> Image.Image:
    """Render one panel and return it as a PIL RGB image.

    Args:
        image: (3, H, W) normalised float tensor/array (de-normalised with ``mean``/``std``)
            or (H, W, 3) uint8.
        sentence: drawn above the tiles (wrapped).
        target, prediction: (H, W) bool masks, drawn in red / green at 50 % opacity; without
            a ``target`` (a prediction on a new image) its tile is left out.
        uncertainty_prob: (H, W) ``U^p`` in [0, 1], shown with :func:`heat_colormap`; None (a
            model without the scorer) leaves its tile out.
        refine_mask: optional (H, W) ``M`` in [0, 1], shown in grey.
        tile_size: side of each tile (default: the image's own size, at least 128).

    Returns:
        RGB image of width ``n_tiles * (tile + 4) + 4`` with the sentence band on top.
    """
    rgb = _image_rgb(image, mean, std)
    size = rgb.shape[:2]
    tiles, titles = [rgb], ["image"]
    if target is not None:
        tiles.append(_overlay(rgb, _map(target, size, binary=True, name="target"), GT_COLOUR))
        titles.append("ground truth")
    tiles.append(_overlay(rgb, _map(prediction, size, binary=True, name="prediction"), PRED_COLOUR))
    titles.append("prediction")
    if uncertainty_prob is not None:
        tiles.append(heat_colormap(_map(uncertainty_prob, size, binary=False, name="uncertainty_prob")))
        titles.append("U^p")
    if refine_mask is not None:
        m = np.clip(_map(refine_mask, size, binary=False, name="refine_mask"), 0, 1)
        tiles.append(np.repeat(np.rint(m * 255).astype(np.uint8)[..., None], 3, axis=2))
        titles.append("M")
    side = tile_size or max(128, max(size))
    scale_w = round(side * size[1] / max(size))
    scale_h = round(side * size[0] / max(size))
    pad = 4
    font = _font(12)
    lines = textwrap.wrap(sentence, width=max(20, (len(tiles) * (scale_w + pad)) // 7)) or [""]
    line_h = 16
    band = pad + line_h * len(lines) + pad
    title_h = line_h
    width = pad + len(tiles) * (scale_w + pad)
    height = band + title_h + scale_h + pad
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * line_h), line, fill=(0, 0, 0), font=font)
    for k, (tile, title) in enumerate(zip(tiles, titles, strict=True)):
        x = pad + k * (scale_w + pad)
        draw.text((x, band), title, fill=(80, 80, 80), font=font)
        panel.paste(Image.fromarray(tile).resize((scale_w, scale_h), Image.Resampling.NEAREST), (x, band + title_h))
    return panel


def save_panel(
    path: str | Path,
    *,
    image: Any,
    sentence: str,
    target: Any = None,
    prediction: Any,
    uncertainty_prob: Any = None,
    refine_mask: Any = None,
    mean: Sequence[float] = _MEAN,
    std: Sequence[float] = _STD,
    tile_size: int | None = None,
) -> Path:
    """Render a panel with :func:`render_panel` (same arguments) and save it as PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panel = render_panel(
        image=image,
        sentence=sentence,
        target=target,
        prediction=prediction,
        uncertainty_prob=uncertainty_prob,
        refine_mask=refine_mask,
        mean=mean,
        std=std,
        tile_size=tile_size,
    )
    panel.save(path, format="PNG")
    return path


def save_grid(path: str | Path, panels: Sequence[dict[str, Any] | Image.Image], *, columns: int = 1) -> Path:
    """Stack several panels (dicts of :func:`render_panel` arguments or rendered images)
    in a grid of ``columns`` columns and save as PNG."""
    if not panels:
        raise ValueError("save_grid needs at least one panel")
    images = [p if isinstance(p, Image.Image) else render_panel(**p) for p in panels]
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % columns) * cell_w, (i // columns) * cell_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path
