"""Vision and text encoders of the reference model: shapes, local weights, foreign checkpoints,
pooler-free text encoder, the padding-mask convention and freezing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from uncertainty_rrsis.models import (  # noqa: E402
    TextEncoder,
    VisionEncoder,
    load_foreign_checkpoint,
)
from uncertainty_rrsis.models.vision import group_norm_groups  # noqa: E402

from helpers.tiny import TINY_BERT, TINY_CONVNEXT  # noqa: E402


def tiny_vision(dim: int = 32, **kwargs) -> VisionEncoder:
    return VisionEncoder("convnext_atto", dim, model_kwargs=TINY_CONVNEXT, **kwargs)


def tiny_timm_model() -> torch.nn.Module:
    torch.manual_seed(1)
    model = timm.create_model("convnext_atto", pretrained=False, **TINY_CONVNEXT)
    with torch.no_grad():  # non-default values everywhere, so a skipped tensor cannot pass unnoticed
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


# ------------------------------------------------------------------------------------ vision


def test_group_norm_groups():
    assert group_norm_groups(256) == 32
    assert group_norm_groups(48) == 24
    assert group_norm_groups(20, 32) == 20
    assert group_norm_groups(7) == 7
    assert group_norm_groups(64, 8) == 8


def test_vision_encoder_levels_and_shapes():
    enc = tiny_vision(dim=48)
    assert enc.widths == (16, 32, 64, 128)
    assert enc.strides == (4, 8, 16, 32)
    assert enc.dim == 48
    assert all(p[1].num_groups == 24 for p in enc.proj)
    feats = enc(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 48, 16, 24), (2, 48, 8, 12), (2, 48, 4, 6), (2, 48, 2, 3)]
    # each level ends with GroupNorm(24 groups) at its initial affine: zero mean, unit variance per group
    for f in feats:
        groups = f.detach().reshape(2, 24, -1)
        torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 24), rtol=0, atol=1e-4)
        torch.testing.assert_close(groups.var(-1, unbiased=False), torch.ones(2, 24), rtol=0, atol=2e-2)


def test_vision_encoder_rejects_bad_images():
    enc = tiny_vision()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="4 dims"):
        enc(torch.randn(3, 32, 32))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vision_local_weights_file(tmp_path: Path, suffix: str):
    source = tiny_timm_model()
    path = tmp_path / f"convnext{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    enc = tiny_vision(weights=str(path))
    loaded = enc.backbone.state_dict()
    for key, value in loaded.items():
        original = key.replace("stem_", "stem.").replace("stages_", "stages.")
        torch.testing.assert_close(value, state[original], rtol=0, atol=0)


def test_vision_missing_weights_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tiny_vision(weights=str(tmp_path / "nope.pth"))


def _assert_backbone_equals(enc: VisionEncoder, source: torch.nn.Module, *, skip: tuple[str, ...] = ()) -> None:
    reference = {k.replace(".", "_"): v for k, v in source.state_dict().items()}
    for key, value in enc.backbone.state_dict().items():
        if key in skip:
            continue
        torch.testing.assert_close(value, reference[key.replace(".", "_")], rtol=0, atol=0, msg=key)


def test_foreign_checkpoint_prefixes_missing_and_unexpected(tmp_path: Path):
    source = tiny_timm_model()
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    dropped = "module.backbone.stages.2.blocks.0.conv_dw.weight"
    del state[dropped]
    state["module.decode_head.conv_seg.weight"] = torch.zeros(2, 8, 1, 1)
    path = tmp_path / "seg_checkpoint.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": state}, path)

    enc = tiny_vision()
    before = enc.backbone.state_dict()["stages_2.blocks.0.conv_dw.weight"].clone()
    report = load_foreign_checkpoint(enc, path)
    assert report.missing == ["stages_2.blocks.0.conv_dw.weight"]
    assert "decode_head.conv_seg.weight" in report.unexpected
    assert "head.fc.weight" in report.unexpected  # the classifier is not part of the features model
    assert not report.mismatched and not report.ok
    assert "missing (1" in str(report) and "decode_head.conv_seg.weight" in str(report)
    _assert_backbone_equals(enc, source, skip=("stages_2.blocks.0.conv_dw.weight",))
    torch.testing.assert_close(enc.backbone.state_dict()["stages_2.blocks.0.conv_dw.weight"], before)
    with pytest.raises(ValueError, match="strict"):
        load_foreign_checkpoint(tiny_vision(), path, strict=True)


def test_foreign_checkpoint_prefix_key_map_and_shape_mismatch(tmp_path: Path):
    source = tiny_timm_model()
    state = {f"encoder_q.body.{k}": v for k, v in source.state_dict().items()}
    state.update({f"encoder_k.body.{k}": torch.zeros_like(v) for k, v in source.state_dict().items()})
    state["encoder_q.body.stem.0.bias"] = torch.zeros(7)  # wrong shape
    path = tmp_path / "moco.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    enc = tiny_vision()
    report = load_foreign_checkpoint(enc, path, prefix="encoder_q.", key_map={r"^body\.": ""})
    assert report.mismatched == [("stem_0.bias", (7,), (16,))]
    assert report.missing == ["stem_0.bias"]
    _assert_backbone_equals(enc, source, skip=("stem_0.bias",))


def test_foreign_checkpoint_nothing_matches(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"transformer.layer.0.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match="no key .* matches the model"):
        load_foreign_checkpoint(tiny_vision(), path)
    with pytest.raises(ValueError, match="prefix"):
        load_foreign_checkpoint(tiny_vision(), path, prefix="teacher.")


def test_foreign_checkpoint_fb_convnext_names(tmp_path: Path):
    source = tiny_timm_model()
    fb = {}
    for key, value in source.state_dict().items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        fb[key] = value
    path = tmp_path / "convnext_fb.pth"
    torch.save({"model": fb}, path)
    enc = tiny_vision()
    report = load_foreign_checkpoint(enc, path)
    assert report.missing == [] and not report.mismatched
    _assert_backbone_equals(enc, source)


def test_foreign_checkpoint_torchvision_convnext(tmp_path: Path):
    tv = pytest.importorskip("torchvision.models.convnext")
    torch.manual_seed(2)
    blocks = [tv.CNBlockConfig(16, 32, 1), tv.CNBlockConfig(32, 64, 1), tv.CNBlockConfig(64, 128, 1),
              tv.CNBlockConfig(128, None, 1)]
    model = tv.ConvNeXt(blocks, num_classes=10).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "convnext_torchvision.pth"
    torch.save(model.state_dict(), path)

    enc = tiny_vision().eval()
    report = load_foreign_checkpoint(enc, path)
    assert report.missing == [] and not report.mismatched
    assert all(k.startswith("head.") for k in report.unexpected)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = enc.backbone(x)
        expected, h = [], x
        for i, layer in enumerate(model.features):
            h = layer(h)
            if i % 2 == 1:
                expected.append(h)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------- text


def tiny_text(folder: Path, dim: int = 24, **kwargs) -> TextEncoder:
    return TextEncoder(str(folder), dim, **kwargs)


def test_text_encoder_from_local_folder(tiny_bert_dir: Path, tiny_batch):
    from transformers import BertModel

    enc = tiny_text(tiny_bert_dir)
    assert enc.hidden_dim == 32 and enc.dim == 24 and enc.max_tokens == 20
    assert enc.backbone.pooler is None
    assert not [n for n, _ in enc.named_parameters() if "pooler" in n]
    reference = BertModel.from_pretrained(str(tiny_bert_dir))
    for key, value in enc.backbone.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key], rtol=0, atol=0)

    input_ids, attention_mask = tiny_batch
    text, padding = enc(input_ids, attention_mask)
    assert text.shape == (2, 20, 24)
    assert padding.dtype == torch.bool and torch.equal(padding, attention_mask == 0)
    text2, padding2 = enc(input_ids, text_padding_mask=attention_mask == 0)
    torch.testing.assert_close(text, text2, rtol=0, atol=0)
    assert torch.equal(padding, padding2)
    # padded tokens do not change the result of the kept ones
    short, _ = enc(input_ids[1:, :5], attention_mask[1:, :5])
    torch.testing.assert_close(short, text[1:, :5], rtol=1e-5, atol=1e-5)


def test_text_encoder_every_parameter_gets_a_gradient(tiny_bert_dir: Path, tiny_batch):
    enc = tiny_text(tiny_bert_dir)
    text, _ = enc(*tiny_batch)
    text.square().mean().backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None]
    assert no_grad == []


def test_text_encoder_random_init_without_weights(tiny_bert_dir: Path):
    enc = TextEncoder("not-a-real/model-id", 16, pretrained=False, hf_config=TINY_BERT)
    assert enc.hidden_dim == 32 and enc.backbone.pooler is None
    enc2 = TextEncoder(str(tiny_bert_dir), 16, pretrained=False)  # architecture from the folder only
    assert enc2.backbone.config.num_hidden_layers == 2
    saved = load_file(str(tiny_bert_dir / "model.safetensors"))
    word = next(k for k in saved if k.endswith("word_embeddings.weight"))
    assert saved[word].shape == enc2.backbone.embeddings.word_embeddings.weight.shape
    assert not torch.equal(saved[word], enc2.backbone.embeddings.word_embeddings.weight)  # not loaded
    text, padding = enc(torch.randint(0, 64, (1, 6)))
    assert text.shape == (1, 6, 16) and not padding.any()
    assert enc.hf_config_dict()["model_type"] == "bert"


def test_text_encoder_mask_and_length_errors(tiny_bert_dir: Path, tiny_batch):
    enc = tiny_text(tiny_bert_dir)
    input_ids, attention_mask = tiny_batch
    with pytest.raises(ValueError, match="ambiguous"):
        enc(input_ids, attention_mask.bool())
    with pytest.raises(ValueError, match="not both"):
        enc(input_ids, attention_mask, text_padding_mask=attention_mask == 0)
    with pytest.raises(ValueError, match="max_tokens=20"):
        enc(torch.ones(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="bool"):
        enc(input_ids, text_padding_mask=attention_mask)


def test_text_encoder_freeze(tiny_bert_dir: Path, tiny_batch):
    enc = tiny_text(tiny_bert_dir, freeze=True, lr_multiplier=0.1)
    assert enc.freeze and enc.lr_multiplier == 0.1
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert all(p.requires_grad for p in enc.proj.parameters())
    enc.train()
    assert enc.training and not enc.backbone.training  # no dropout in the frozen encoder
    text, _ = enc(*tiny_batch)
    text.sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters())
    assert enc.proj.weight.grad is not None


def test_vision_weights_that_do_not_fit_are_an_error(tmp_path):
    """timm loads features_only weights non-strictly; the encoder must still refuse a wrong file."""
    import timm

    from uncertainty_rrsis.models import VisionEncoder

    other = timm.create_model("convnext_atto", dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        VisionEncoder("convnext_atto", 16, weights=tmp_path / "other.pth", model_kwargs=TINY_CONVNEXT)
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match=r"foreign\.pth.*foo\.weight"):
        VisionEncoder("convnext_atto", 16, weights=tmp_path / "foreign.pth", model_kwargs=TINY_CONVNEXT)
