"""SMLFR's ConvNeXt-B checkpoints (the paper's visual initialisation) load into the reference model.

SMLFR's pre-training saves the encoder for fine-tuning as ``{"arch": "convnext_base", "module": state,
"is_pretrain": False}``, ``state`` in the original Facebook ConvNeXt names (``downsample_layers.i.j``,
``stages.s.b.{dwconv, norm, pwconv1, pwconv2, gamma}``, the pointwise convolutions as Linear layers, no
final norm); its full checkpoint holds the same keys under ``sparse_encoder.sp_cnn.`` next to the
decoder's. The files here have those names and ConvNeXt-B's shapes, on the meta device (no weights
needed), and a small one with real values checks that every value lands where it belongs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

from uncertainty_rrsis.models import CroBIMU, VisionEncoder, get_preset, load_foreign_checkpoint  # noqa: E402

from helpers.tiny import TINY_CONVNEXT  # noqa: E402

BASE_DIMS, BASE_DEPTHS = (128, 256, 512, 1024), (3, 3, 27, 3)


def smlfr_shapes(dims, depths) -> dict[str, tuple[int, ...]]:
    """SMLFR's encoder keys and shapes for a ConvNeXt of ``dims`` / ``depths``."""
    shapes: dict[str, tuple[int, ...]] = {
        "downsample_layers.0.0.weight": (dims[0], 3, 4, 4), "downsample_layers.0.0.bias": (dims[0],),
        "downsample_layers.0.1.weight": (dims[0],), "downsample_layers.0.1.bias": (dims[0],),
    }
    for i in range(1, 4):
        shapes |= {f"downsample_layers.{i}.0.weight": (dims[i - 1],), f"downsample_layers.{i}.0.bias": (dims[i - 1],),
                   f"downsample_layers.{i}.1.weight": (dims[i], dims[i - 1], 2, 2),
                   f"downsample_layers.{i}.1.bias": (dims[i],)}
    for s, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        for b in range(depth):
            p = f"stages.{s}.{b}."
            shapes |= {p + "dwconv.weight": (c, 1, 7, 7), p + "dwconv.bias": (c,), p + "norm.weight": (c,),
                       p + "norm.bias": (c,), p + "pwconv1.weight": (4 * c, c), p + "pwconv1.bias": (4 * c,),
                       p + "pwconv2.weight": (c, 4 * c), p + "pwconv2.bias": (c,), p + "gamma": (c,)}
    return shapes


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def test_the_encoder_file_fills_every_weight_of_convnext_b(tmp_path: Path):
    shapes = smlfr_shapes(BASE_DIMS, BASE_DEPTHS)
    assert len(shapes) == 340
    path = tmp_path / "convnext_base_1kpretrained_timm_style.pth"
    torch.save({"arch": "convnext_base", "module": meta_state(shapes), "is_pretrain": False}, path)
    with torch.device("meta"):
        encoder = VisionEncoder("convnext_base", 256)
    report = load_foreign_checkpoint(encoder, path, strict=True)
    assert len(report.loaded) == 340 and not report.missing and not report.unexpected and not report.mismatched


def test_the_full_pretraining_file_loads_its_encoder_and_reports_the_rest(tmp_path: Path):
    state = {f"sparse_encoder.sp_cnn.{k}": v for k, v in meta_state(smlfr_shapes(BASE_DIMS, BASE_DEPTHS)).items()}
    extras = {"mask_tokens.0": (1, 1024, 1, 1), "densify_norms.0.weight": (1024,), "densify_projs.0.weight":
              (768, 1024, 1, 1), "dense_decoder.dec.0.up_sample.weight": (768, 384, 2, 2), "imn_m": (1, 3, 1, 1)}
    state |= meta_state(extras)
    path = tmp_path / "convnext_base_withdecoder_1kpretrained_pcfm_style.pth"
    torch.save({"epoch": 800, "arch": "convnext_base", "module": state, "is_pretrain": True}, path)
    with torch.device("meta"):
        encoder = VisionEncoder("convnext_base", 256)
    report = load_foreign_checkpoint(encoder, path, strict=True)
    assert len(report.loaded) == 340 and not report.missing
    assert set(report.unexpected) == set(extras)


def test_the_paper_model_takes_the_smlfr_file_as_its_vision_weights(tmp_path: Path):
    path = tmp_path / "smlfr.pth"
    torch.save({"arch": "convnext_base", "module": meta_state(smlfr_shapes(BASE_DIMS, BASE_DEPTHS)),
                "is_pretrain": False}, path)
    config = get_preset("paper", vision={"weights": str(path)},
                        text={"pretrained": False, "hf_config": {"model_type": "bert", "num_hidden_layers": 1}})
    with torch.device("meta"):
        model = CroBIMU(config)  # every backbone weight found, or a ValueError naming the file
    assert model.vision.widths == BASE_DIMS


def test_values_land_where_they_belong(tmp_path: Path):
    """A small ConvNeXt saved under SMLFR's names and shapes (real values) loads value for value, through
    vision.weights (convnext_atto's pointwise convolutions are 1 x 1 convolutions, SMLFR's are Linear)."""
    dims, depths = TINY_CONVNEXT["dims"], TINY_CONVNEXT["depths"]
    shapes = smlfr_shapes(dims, depths)
    torch.manual_seed(0)
    source = timm.create_model("convnext_atto", **TINY_CONVNEXT)
    smlfr = {}
    for key, value in source.state_dict().items():
        if key.startswith("head."):
            continue
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        smlfr[key] = value.reshape(shapes[key]).clone()
    assert set(smlfr) == set(shapes)
    path = tmp_path / "smlfr_small.pth"
    torch.save({"arch": "convnext_atto", "module": smlfr, "is_pretrain": False}, path)
    encoder = VisionEncoder("convnext_atto", 16, weights=str(path), model_kwargs=dict(TINY_CONVNEXT))
    for key, value in encoder.backbone.state_dict().items():
        original = key.replace("stem_", "stem.").replace("stages_", "stages.")
        torch.testing.assert_close(value, source.state_dict()[original], rtol=0, atol=0)
