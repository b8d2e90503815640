"""Rendering a Fig. 6-style panel and checking the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_rrsis.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from uncertainty_rrsis.viz import heat_colormap, render_panel, save_grid, save_panel

S = 64


def _inputs():
    black = (torch.zeros(3, S, S) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(3, 1, 1)
    target = torch.zeros(S, S, dtype=torch.bool)
    target[:, : S // 2] = True  # left half
    prediction = torch.zeros(S, S, dtype=torch.bool)
    prediction[: S // 4] = True  # top quarter
    unc = torch.linspace(0, 1, S).expand(S, S)
    return dict(
        image=black,
        sentence="the red building in the upper left",
        target=target,
        prediction=prediction,
        uncertainty_prob=unc,
        refine_mask=torch.zeros(S // 2, S // 2),
    )


def _runs(xs):
    return xs.min(), xs.max()


def test_panel_png_has_red_gt_and_green_prediction(tmp_path):
    path = save_panel(tmp_path / "panel.png", **_inputs())
    img = np.asarray(Image.open(path).convert("RGB"))
    scale = 2  # tiles are at least 128 px: 64 -> 128
    assert img.shape[1] == 4 + 5 * (S * scale + 4)  # five tiles with M
    red = np.all(img == (128, 0, 0), axis=2)  # 50 % red over black
    green = np.all(img == (0, 128, 0), axis=2)
    assert red.sum() == (S * S // 2) * scale**2
    assert green.sum() == (S * S // 4) * scale**2
    ys, xs = np.nonzero(red)
    x0 = xs.min()
    assert xs.max() - x0 + 1 == S  # the left half of the ground-truth tile ...
    right = img[ys.min() : ys.max() + 1, x0 + S : x0 + 2 * S]
    assert np.all(right == 0)  # ... and the right half shows the black image
    gy, gx = np.nonzero(green)
    assert gx.min() > xs.max() and gy.max() - gy.min() + 1 == S // 4 * scale  # top quarter, third tile
    top = heat_colormap(np.array(1.0))
    assert np.all(img == top, axis=2).any()  # U^p ramp reaches its hottest colour
    assert (img[: ys.min() - 16] < 100).any()  # dark sentence text above the tiles


def test_panel_without_m_and_uint8_image():
    inputs = _inputs()
    inputs.pop("refine_mask")
    inputs["image"] = np.zeros((S, S, 3), np.uint8)
    panel = render_panel(**inputs, tile_size=S)
    assert panel.width == 4 + 4 * (S + 4)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        render_panel(**{**inputs, "target": torch.zeros(2, S, S, dtype=torch.bool)})


def test_colormap_is_monotone_in_brightness():
    colours = heat_colormap(np.linspace(0, 1, 11)).astype(float)
    brightness = colours @ np.array([0.299, 0.587, 0.114])
    assert colours.shape == (11, 3) and colours.dtype == float
    assert np.all(np.diff(brightness) > 0)
    assert tuple(heat_colormap(np.array(0.0))) == (0, 0, 0)


def test_grid(tmp_path):
    panel = render_panel(**_inputs())
    path = save_grid(tmp_path / "grid.png", [_inputs(), panel, _inputs()], columns=2)
    grid = Image.open(path)
    assert grid.size == (2 * panel.width, 2 * panel.height)
    pixels = np.asarray(grid.convert("RGB"))
    tile = np.asarray(panel.convert("RGB"))
    assert np.array_equal(pixels[: panel.height, panel.width :], tile)  # the panel given as is: top right
    assert np.array_equal(pixels[: panel.height, : panel.width], tile)  # the same inputs rendered: top left
    assert np.array_equal(pixels[panel.height :, : panel.width], tile)
    empty = pixels[panel.height :, panel.width :]
    assert (empty == empty[0, 0]).all()  # the fourth cell is plain background
