"""Coarse to fine on scenes larger than the model's input: the single pass for small scenes, the window
blending against a plain reference implementation, the region, the combination modes, nodata."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")

from uncertainty_rrsis.data import ResizeNormalize  # noqa: E402
from uncertainty_rrsis.inference import LoadedImage, ReferringSegmenter  # noqa: E402
from uncertainty_rrsis.scenes import (  # noqa: E402
    SceneSegmenter,
    connected_components,
    hann_window,
    window_starts,
)
from uncertainty_rrsis.scenes.grid import coarse_crop  # noqa: E402

from helpers.tiny import perturbed_model  # noqa: E402

SENTENCE = "the small white ship at the left of the pier"


@pytest.fixture(scope="module")
def segmenter(tiny_config, tiny_tokenizer) -> ReferringSegmenter:
    model = perturbed_model(tiny_config)
    return ReferringSegmenter(model, tiny_tokenizer, batch_size=4)


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    return np.clip(smooth.astype(int) + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


def _reference_windows(segmenter, image, sentence, *, window, overlap):
    """Every window of the grid, blended with the Hann weight over the whole scene: (H, W) logits and
    uncertainty logits, computed one window at a time with plain full-size accumulators."""
    height, width = image.shape[:2]
    h, w = min(window, height), min(window, width)
    sy, sx = round(h * (1 - overlap)), round(w * (1 - overlap))
    side = segmenter.image_size
    size = (h, w) if window == side else (round(h * side / window), round(w * side / window))
    transform = ResizeNormalize(image_size=size)
    num, num_u, den = torch.zeros(height, width), torch.zeros(height, width), torch.zeros(height, width)
    weight = hann_window(h, w)
    tokens = segmenter.tokens([sentence])
    for y in window_starts(height, h, sy):
        for x in window_starts(width, w, sx):
            crop = transform.normalize(transform.resize_image(Image.fromarray(image[y : y + h, x : x + w])))
            logits, unc = segmenter.logits(crop[None], tokens)[:2]
            logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            unc = torch.nn.functional.interpolate(unc, size=(h, w), mode="bilinear", align_corners=False)
            num[y : y + h, x : x + w] += weight * logits[0, 0]
            num_u[y : y + h, x : x + w] += weight * unc[0, 0]
            den[y : y + h, x : x + w] += weight
    return num / den, num_u / den


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.double(), eps=1e-12)


def test_hann_weights_blend_to_one():
    weight = hann_window(8, 12)
    assert weight.shape == (8, 12) and float(weight.min()) > 0
    assert torch.allclose(weight, weight.flip(0)) and torch.allclose(weight, weight.flip(1))
    total = torch.zeros(40, 48)  # windows every half side: the weights sum to one inside the plane
    for y in range(0, 40 - 8 + 1, 4):
        for x in range(0, 48 - 12 + 1, 6):
            total[y : y + 8, x : x + 12] += weight
    assert torch.allclose(total[4:-4, 6:-6], torch.ones(32, 36), atol=1e-6)
    assert window_starts(100, 40, 20) == [0, 20, 40, 60] and window_starts(105, 40, 20) == [0, 20, 40, 60, 65]
    assert window_starts(30, 40, 20) == [0]


def test_a_scene_no_larger_than_the_input_gets_the_single_pass(segmenter):
    image = _scene(64, 50, seed=1)
    scene = SceneSegmenter(segmenter)(image, SENTENCE)
    single = segmenter(image, SENTENCE)
    for name in ("mask", "probability", "uncertainty", "refine_mask"):
        assert torch.equal(getattr(scene, name), getattr(single, name)), name
    assert scene.details is None
    both = SceneSegmenter(segmenter)(image, [SENTENCE, "a red car"])
    assert isinstance(both, list) and torch.allclose(both[0].probability, single.probability, atol=1e-5)


@pytest.mark.parametrize(("window", "batch"), [(64, 3), (96, 2)])
def test_window_blending_equals_the_reference(segmenter, window, batch):
    """Every window (the region covers the scene), streamed in bands of ``batch`` windows, equals the plain
    blend over the whole scene: native windows, and windows larger than the input resized to it."""
    image = _scene(150, 230, seed=2)
    scenes = SceneSegmenter(segmenter, window_size=window, combine="windows", full_tiling=True, window_batch=batch)
    pred = scenes(image, SENTENCE)
    logits, unc = _reference_windows(segmenter, image, SENTENCE, window=window, overlap=0.5)
    h, w = min(window, 150), min(window, 230)
    total = len(window_starts(150, h, h // 2)) * len(window_starts(230, w, w // 2))
    assert pred.details["windows"] == pred.details["windows_full_tiling"] == total
    assert pred.details["region"] == [0, 0, 230, 150]
    assert torch.allclose(pred.probability, torch.sigmoid(logits), atol=1e-5)
    assert torch.allclose(pred.uncertainty, torch.sigmoid(unc), atol=1e-5)
    assert torch.equal(pred.mask, pred.probability > 0.5) and pred.refine_mask is None


class _FixedRegion(SceneSegmenter):
    """The region is the left 40 % of the whole-scene grid: what the combination does is then known."""

    def region(self, coarse_logits, coarse_uncertainty, size, *, margin=None):
        region = torch.zeros(coarse_logits.shape[-2:], dtype=torch.bool)
        region[:, : int(0.4 * region.shape[1])] = True
        return region


def _region_at_native(region, size):
    rows = torch.clamp(((torch.arange(size[0]) + 0.5) * region.shape[0] / size[0]).long(), max=region.shape[0] - 1)
    cols = torch.clamp(((torch.arange(size[1]) + 0.5) * region.shape[1] / size[1]).long(), max=region.shape[1] - 1)
    return region[rows][:, cols]


@pytest.mark.parametrize("combine", ["gate", "gate_mean", "mean", "windows", "components+", "components-"])
def test_combination_modes(segmenter, combine):
    """What each mode gives inside the region, in the rest of the windows' reach and outside it.
    ``components+``: the windows agree enough (agreement 0), ``components-``: they never do (agreement 1.01)."""
    image = _scene(140, 260, seed=3)
    agreement = {"components+": 0.0, "components-": 1.01}.get(combine, 0.3)
    scenes = _FixedRegion(segmenter, combine=combine.rstrip("+-"), agreement=agreement, window_size=64,
                          window_batch=3)
    pred = scenes(image, SENTENCE)
    single = segmenter(image, SENTENCE)
    windows, _ = _reference_windows(segmenter, image, SENTENCE, window=64, overlap=0.5)
    inside = _region_at_native(scenes.region(torch.zeros(1, 1, 64, 64), None, (140, 260)), (140, 260))
    x1 = pred.details["region"][2]
    covered = torch.zeros(140, 260, dtype=torch.bool)
    covered[:, :x1] = True  # the chosen windows cover every row and the columns up to x1
    assert 0 < pred.details["windows"] < pred.details["windows_full_tiling"]
    assert inside.any() and (covered & ~inside).any() and (~covered).any()
    coarse = _logit(single.probability)
    got = _logit(pred.probability)
    assert torch.equal(pred.probability[~covered], single.probability[~covered])  # the whole-scene pass
    if combine in ("gate", "components+"):
        expected_inside, expected_rest = windows, coarse
    elif combine == "components-":
        expected_inside, expected_rest = coarse, coarse
    elif combine == "gate_mean":
        expected_inside, expected_rest = 0.5 * (windows + coarse), coarse
    elif combine == "mean":
        expected_inside = expected_rest = 0.5 * (windows + coarse)
    else:
        expected_inside = expected_rest = windows
    assert torch.allclose(got[inside], expected_inside.double()[inside], atol=1e-4)
    starts = window_starts(260, 64, 32)
    chosen = [x for x in starts if x < x1 and x + 64 <= x1]
    complete = torch.tensor([all(x in chosen for x in starts if x <= c < x + 64) for c in range(260)])
    rest = covered & ~inside & complete[None, :]  # where every window of the grid ran, as in the reference
    assert rest.any()
    assert torch.allclose(got[rest], expected_rest.double()[rest], atol=1e-4)
    if combine.startswith("components"):
        assert pred.details["candidates"] == 1 and pred.details["redrawn"] == (combine == "components+")


def test_the_region_grows_by_the_margin_and_the_connected_uncertain_pixels(segmenter):
    scenes = SceneSegmenter(segmenter, margin=16, uncertainty_threshold=0.5, min_probability=0.1)
    logits = torch.full((1, 1, 64, 64), -8.0)
    unc = torch.full((1, 1, 64, 64), -8.0)
    logits[0, 0, 10, 20] = 3.0  # the referent
    logits[0, 0, 11:14, 21], unc[0, 0, 11:14, 21] = -1.0, 2.0  # uncertain, probability 0.27, touching it: widens
    logits[0, 0, 14, 22], unc[0, 0, 14, 22] = -5.0, 2.0  # uncertain, probability 0.007: does not
    logits[0, 0, 40, 40], unc[0, 0, 40, 40] = -1.0, 2.0  # uncertain but away from the referent: does not
    region = scenes.region(logits, unc, (640, 640))  # 10 native pixels per coarse pixel: radius ceil(1.6) = 2
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[8:13, 18:23] = True
    expected[9:16, 19:24] = True
    assert torch.equal(region, expected)
    alone = torch.zeros(64, 64, dtype=torch.bool)
    alone[8:13, 18:23] = True
    assert torch.equal(scenes.region(logits, None, (640, 640)), alone)  # no uncertainty map: the referent alone
    wide = scenes.region(logits, None, (640, 2560))  # radius 2 rows, 1 column
    assert torch.equal(wide.nonzero().amin(0), torch.tensor([8, 19]))
    assert not scenes.region(torch.full((1, 1, 64, 64), -1.0), torch.full((1, 1, 64, 64), 5.0), (640, 640)).any()
    assert SceneSegmenter(segmenter, full_tiling=True).region(logits, unc, (640, 640)).all()


def test_connected_components_and_thecoarse_crop():
    mask = torch.zeros(6, 7, dtype=torch.bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one object
    mask[4:6, 3:7] = True
    labels, count = connected_components(mask)
    assert count == 2 and labels[0, 0] == labels[1, 1] != labels[4, 3] and (labels[~mask] == 0).all()
    assert connected_components(torch.zeros(3, 3, dtype=torch.bool))[1] == 0
    coarse = torch.randn(16, 16)
    full = torch.nn.functional.interpolate(coarse[None, None], size=(70, 90), mode="bilinear",
                                           align_corners=False)[0, 0]
    assert torch.allclose(coarse_crop(coarse, (70, 90), (5, 40), (0, 90)), full[5:40], atol=1e-5)
    assert torch.allclose(coarse_crop(coarse, (70, 90), (60, 70), (33, 34)), full[60:70, 33:34], atol=1e-5)


def test_windows_run_only_where_the_region_is(segmenter):
    image = _scene(256, 256, seed=4)
    scenes = _FixedRegion(segmenter, window_size=64)
    pred = scenes(image, SENTENCE)
    region = scenes.region(torch.zeros(1, 1, 64, 64), None, (256, 256))
    starts = window_starts(256, 64, 32)
    def cells(a):  # the whole-scene grid cells under native pixels a .. a + 64
        return slice(a * 64 // 256, math.ceil((a + 64) * 64 / 256))

    expected = sum(1 for y in starts for x in starts if region[cells(y), cells(x)].any())
    assert pred.details["windows"] == expected < len(starts) ** 2


def test_nodata_and_bad_input(segmenter):
    image = _scene(120, 200, seed=5)
    valid = np.ones((120, 200), dtype=bool)
    valid[:, :30] = False
    loaded = LoadedImage(Image.fromarray(image), (120, 200), valid=valid, name="scene.tif")
    pred = SceneSegmenter(segmenter, window_size=64, full_tiling=True)(loaded, SENTENCE)
    assert not pred.mask[:, :30].any() and float(pred.probability[:, :30].max()) == 0.0
    assert pred.mean_uncertainty() == pytest.approx(float(pred.uncertainty[:, 30:].double().mean()))
    with pytest.raises(ValueError, match=r"sentence 1 is empty \(image scene\.tif\)"):
        SceneSegmenter(segmenter)(loaded, [SENTENCE, " "])
    with pytest.raises(ValueError, match="combine must be one of"):
        SceneSegmenter(segmenter, combine="vote")
    with pytest.raises(ValueError, match="not found"):
        SceneSegmenter(segmenter)("missing.png", SENTENCE)


def _components_by_growing(mask: torch.Tensor) -> torch.Tensor:
    """The slow reference: every pixel takes the largest id of its 8-connected component."""
    keep = mask[None, None]
    ids = torch.arange(1, mask.numel() + 1, dtype=torch.float64).reshape(1, 1, *mask.shape)
    labels = torch.where(keep, ids, torch.zeros_like(ids))
    while True:
        grown = torch.where(keep, torch.nn.functional.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(grown, labels):
            return labels[0, 0].long()
        labels = grown


@pytest.mark.parametrize("seed", range(4))
def test_connected_components_partition_pixels_as_growing_labels_does(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(40, 53, generator=g) < 0.45  # many components, touching diagonally, winding
    labels, count = connected_components(mask)
    reference = _components_by_growing(mask)
    pairs = torch.stack([labels[mask], reference[mask]], dim=1).unique(dim=0)
    assert count == len(reference[mask].unique()) == len(pairs)  # one to one: the same partition
    assert torch.equal(labels[~mask], torch.zeros_like(labels[~mask]))
    assert sorted(labels[mask].unique().tolist()) == list(range(1, count + 1))


def test_a_serpentine_is_one_component():
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[::4] = True  # rows 0, 4, 8, ...
    for i, row in enumerate(range(0, 60, 4)):  # joined alternately at the right and the left end
        mask[row : row + 5, 63 if i % 2 == 0 else 0] = True
    labels, count = connected_components(mask)
    assert count == 1 and int(labels.max()) == 1
