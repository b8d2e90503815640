"""ReferringSegmenter: new images + sentences -> masks and uncertainty maps at the images' sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")

from uncertainty_rrsis._ops import resize_logits  # noqa: E402
from uncertainty_rrsis.data._text import tokenize  # noqa: E402
from uncertainty_rrsis.data.transforms import ResizeNormalize  # noqa: E402
from uncertainty_rrsis.inference import ReferringPrediction, ReferringSegmenter  # noqa: E402
from uncertainty_rrsis.models import CroBIMU  # noqa: E402

from helpers.tiny import perturbed_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["the small white ship at the left of the pier", "a red car", "the road"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    return perturbed_model(tiny_config).save_pretrained(folder, tokenizer=tiny_tokenizer)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_maps_come_back_at_the_image_size(checkpoint):
    segmenter = ReferringSegmenter.from_pretrained(checkpoint)
    image = _image(37, 50)
    pred = segmenter(image, SENTENCES[0])
    assert isinstance(pred, ReferringPrediction) and pred.sentence == SENTENCES[0]
    for name in ("mask", "probability", "uncertainty", "refine_mask"):
        assert tuple(getattr(pred, name).shape) == (37, 50), name
    assert pred.mask.dtype == torch.bool and pred.probability.dtype == torch.float32
    assert torch.equal(pred.mask, pred.probability > 0.5)
    for name in ("probability", "uncertainty", "refine_mask"):
        values = getattr(pred, name)
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0, name
    assert pred.image.shape == (37, 50, 3)


def test_same_pipeline_as_training(checkpoint, tiny_tokenizer):
    """An image at the model's input size gives exactly the model's own output on the dataset transform."""
    segmenter = ReferringSegmenter.from_pretrained(checkpoint)
    model = segmenter.model
    image = _image(64, 64, seed=1)
    pred = segmenter(image, SENTENCES[1])
    x = ResizeNormalize(image_size=64).normalize(ResizeNormalize(image_size=64).resize_image(Image.fromarray(image)))
    ids, pad = tokenize(tiny_tokenizer, SENTENCES[1], max_tokens=20)
    with torch.no_grad():
        out = model(x[None], ids[None], text_padding_mask=pad[None])
    assert torch.allclose(pred.probability, torch.sigmoid(out.logits[0, 0]), atol=1e-6)
    u = torch.sigmoid(resize_logits(model.to_image_size(out.uncertainty, (64, 64)), (64, 64)))[0, 0]
    assert torch.allclose(pred.uncertainty, u, atol=1e-6)


def test_batching_and_input_kinds_do_not_change_the_result(checkpoint, tmp_path):
    image = _image(45, 60, seed=2)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    one_by_one = ReferringSegmenter.from_pretrained(checkpoint, batch_size=1)
    batched = ReferringSegmenter.from_pretrained(checkpoint, batch_size=3)
    singles = [one_by_one(image, s) for s in SENTENCES]
    together = batched(str(path), SENTENCES)  # one path for every sentence
    pil = batched([Image.fromarray(image)] * 3, SENTENCES)
    assert isinstance(together, list) and len(together) == 3
    for a, b, c in zip(singles, together, pil, strict=True):
        assert a.sentence == b.sentence == c.sentence
        assert torch.allclose(a.probability, b.probability, atol=1e-5)
        assert torch.allclose(b.probability, c.probability, atol=1e-6)
        assert torch.allclose(a.uncertainty, b.uncertainty, atol=1e-5)
    # different sentences give different answers on the same image
    assert not torch.allclose(together[0].probability, together[1].probability)


def test_base_row_has_no_uncertainty(tmp_path, tiny_config, tiny_tokenizer):
    model = perturbed_model(tiny_config, use_fusion=False, use_refinement=False)
    pred = ReferringSegmenter(model, tiny_tokenizer)(_image(40, 40), SENTENCES[2])
    assert pred.uncertainty is None and pred.refine_mask is None
    paths = pred.save(tmp_path / "base")
    assert set(paths) == {"mask", "panel"}


def test_save_writes_mask_heat_map_and_panel(checkpoint, tmp_path):
    pred = ReferringSegmenter.from_pretrained(checkpoint)(_image(30, 41), SENTENCES[0])
    paths = pred.save(tmp_path / "out" / "scene")
    assert {p.name for p in paths.values()} == {"scene_mask.png", "scene_uncertainty.png", "scene_panel.png"}
    mask = np.asarray(Image.open(paths["mask"]))
    assert mask.shape == (30, 41) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, pred.mask.numpy())
    assert np.asarray(Image.open(paths["uncertainty"])).shape == (30, 41, 3)
    panel = Image.open(paths["panel"])
    assert panel.width > 3 * 128  # image, prediction, U^p, M tiles


def test_bad_inputs_are_named(checkpoint, tmp_path):
    segmenter = ReferringSegmenter.from_pretrained(checkpoint)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt.png"):
        segmenter(str(corrupt), "the road")
    with pytest.raises(ValueError, match="not found"):
        segmenter(str(tmp_path / "missing.png"), "the road")
    with pytest.raises(ValueError, match="2 images and 3 sentences"):
        segmenter([_image(8, 8), _image(8, 8)], SENTENCES)
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        segmenter(_image(8, 8), ["the road", "  "])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        segmenter(np.zeros((8, 8), dtype=np.float32), "the road")
    with pytest.raises(TypeError, match="expected a path"):
        segmenter(42, "the road")
    no_tokenizer = tmp_path / "weights_only"
    CroBIMU.from_pretrained(checkpoint).save_pretrained(no_tokenizer)
    with pytest.raises(FileNotFoundError, match="no tokenizer/ folder"):
        ReferringSegmenter.from_pretrained(no_tokenizer)


def test_non_finite_and_wide_pixels_are_errors(checkpoint, tmp_path):
    segmenter = ReferringSegmenter.from_pretrained(checkpoint)
    values = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    values[2, 3] = np.nan
    with pytest.raises(ValueError, match="image 0 has 1 NaN or infinite pixel"):
        segmenter(Image.fromarray(values), "the road")
    values[2, 3] = np.inf
    Image.fromarray(values).save(tmp_path / "inf.tif")
    with pytest.raises(ValueError, match=r"inf\.tif has 1 NaN or infinite pixel"):
        segmenter(str(tmp_path / "inf.tif"), "the road")
    with pytest.raises(ValueError, match="image 0 holds NaN or infinite values"):
        segmenter(np.full((8, 8, 3), np.nan, dtype=np.float32), "the road")
    values[2, 3] = 0.5
    pred = segmenter(Image.fromarray(values), "the road")  # float in [0, 1]: the documented rule
    assert pred.image.shape == (30, 40, 3) and pred.image[0, 0, 0] == round(float(values[0, 0]) * 255)
    with pytest.raises(ValueError, match="image 0 has 16 bits per sample"):
        segmenter(Image.fromarray((values * 4095).astype(np.uint16)), "the road")


def test_damaged_jpeg_is_an_error(checkpoint, tmp_path):
    from helpers.datasets import damage_jpeg, jpeg_bytes, textured_image

    path = tmp_path / "damaged.jpg"
    path.write_bytes(damage_jpeg(jpeg_bytes(textured_image(128, 128, seed=0), quality=90), seed=0))
    with pytest.raises(ValueError, match=r"damaged\.jpg: its JPEG data is damaged"):
        ReferringSegmenter.from_pretrained(checkpoint)(str(path), "the road")


def test_large_jpeg_is_decoded_at_a_reduced_scale(checkpoint, tmp_path):
    """A JPEG four times the input side (64 px here) is decoded at 1/2-1/8 scale, at least 128 px, then
    resized as in training; the maps still come back at the file's size. Ordinary sizes are untouched."""
    from helpers.datasets import textured_image

    large = tmp_path / "large.jpg"
    Image.fromarray(textured_image(768, 1024, seed=1)).save(large, quality=92)
    reduced = ReferringSegmenter.from_pretrained(checkpoint)(str(large), SENTENCES[0])
    full = ReferringSegmenter.from_pretrained(checkpoint, reduce_large_images=False)(str(large), SENTENCES[0])
    assert reduced.image.shape == (192, 256, 3) and full.image.shape == (768, 1024, 3)  # 1/4 scale
    for pred in (reduced, full):
        assert tuple(pred.mask.shape) == tuple(pred.uncertainty.shape) == (768, 1024)
    assert float((reduced.probability - full.probability).abs().max()) < 0.02
    normal = tmp_path / "normal.jpg"
    Image.fromarray(textured_image(200, 240, seed=2)).save(normal, quality=92)  # < 4 x 64 in height
    a = ReferringSegmenter.from_pretrained(checkpoint)(str(normal), SENTENCES[1])
    b = ReferringSegmenter.from_pretrained(checkpoint, reduce_large_images=False)(str(normal), SENTENCES[1])
    assert a.image.shape == (200, 240, 3) and torch.equal(a.probability, b.probability)
    c = ReferringSegmenter.from_pretrained(checkpoint)(np.asarray(Image.open(normal).convert("RGB")), SENTENCES[1])
    assert torch.equal(a.probability, c.probability)  # the file decodes exactly as the picture in memory


def test_panel_of_a_large_image_is_capped(checkpoint, tmp_path):
    pred = ReferringSegmenter.from_pretrained(checkpoint)(_image(1500, 2100, seed=3), SENTENCES[2])
    panel = pred.panel()
    assert panel.width <= 4 * (1024 + 4) + 4 and panel.height < 1024 + 200
    paths = pred.save(tmp_path / "big")
    assert Image.open(paths["mask"]).size == (2100, 1500) and Image.open(paths["uncertainty"]).size == (2100, 1500)


@pytest.mark.slow
def test_predict_example_script(checkpoint, tmp_path):
    image = tmp_path / "harbour.png"
    Image.fromarray(_image(33, 47, seed=5)).save(image)
    out = tmp_path / "pred"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "predict.py"), str(checkpoint), "--image", str(image),
         "--sentence", "the white ship", "--sentence", "the pier", "--output-dir", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "harbour.png | 'the white ship': mask covers" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert "predictions.json" in names and "predictions.csv" in names
    assert any(n.startswith("harbour__the_white_ship__") and n.endswith("_panel.png") for n in names)
    assert any(n.startswith("harbour__the_pier__") and n.endswith("_uncertainty.png") for n in names)
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "predict.py"), str(checkpoint), "--image",
                          str(tmp_path / "nope.png"), "--sentence", "x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "nope.png" in bad.stderr and "Traceback" not in bad.stderr
