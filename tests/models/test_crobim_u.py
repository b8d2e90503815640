"""The assembled reference model: shapes at several image sizes, the four ablation rows,
parameter groups and counts, configs and presets, ``torch.compile``, save / load."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from uncertainty_rrsis import RiskGuidedOutput  # noqa: E402
from uncertainty_rrsis.models import (  # noqa: E402
    FROM_SCRATCH,
    CroBIMU,
    CroBIMUConfig,
    DecoderConfig,
    ModelConfig,
    TextConfig,
    VisionConfig,
    get_preset,
    list_presets,
    train_tokenizer,
    with_vocabulary,
)

ABLATIONS = {"Base": (False, False), "+UGF": (True, False), "+UDLR": (False, True), "Full": (True, True)}


def build(config: CroBIMUConfig, seed: int = 0, **changes) -> CroBIMU:
    torch.manual_seed(seed)
    return CroBIMU(config.replace(**changes) if changes else config)


@pytest.fixture(scope="module")
def full_model(tiny_config) -> CroBIMU:
    return build(tiny_config)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("size", [(64, 64), (70, 90), (33, 47)], ids=["64x64", "70x90", "33x47"])
def test_forward_backward_shapes(tiny_config, tiny_batch, size):
    model = build(tiny_config)
    input_ids, attention_mask = tiny_batch
    images = torch.randn(2, 3, *size)
    out = model(images, input_ids, attention_mask)
    assert isinstance(out, RiskGuidedOutput)
    h32, w32 = -(-size[0] // 32), -(-size[1] // 32)
    assert out.logits.shape == (2, 1, *size)
    assert out.coarse_logits.shape == (2, 1, *size)
    assert out.uncertainty.shape == (2, 1, h32, w32)
    assert out.refine_mask.shape == (2, 1, h32 * 8, w32 * 8)
    (out.logits.mean() + out.uncertainty.mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert model.to_image_size(out.uncertainty, size).shape == (2, 1, *size)


def test_forward_runs_on_the_meta_device_with_the_same_shapes_and_flops(tiny_config, tiny_batch):
    """Shapes and FLOPs of any input size without allocating memory: the model builds and runs on
    the meta device (the deformable attention leaves autocast alone there)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    input_ids, attention_mask = tiny_batch
    images = torch.randn(2, 3, 64, 96)
    results = {}
    for device in ("cpu", "meta"):
        model = build(tiny_config).eval().to(device)  # on meta, the weights keep shapes and no storage
        args = (images.to(device), input_ids.to(device), attention_mask.to(device))
        # one attention path on both devices (the fused CPU kernel and the meta path count alike only here)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as flops:
            out = model(*args)
        results[device] = ({k: tuple(v.shape) for k, v in out._asdict().items() if torch.is_tensor(v)},
                           flops.get_total_flops())
        assert out.logits.device.type == device
    assert results["meta"] == results["cpu"]
    assert results["meta"][1] > 0


def test_padding_matches_manual_pad_and_crop(full_model, tiny_batch):
    """Non-multiple-of-32 input = the padded input's logits, cropped."""
    model = full_model.eval()
    input_ids, attention_mask = tiny_batch
    images = torch.randn(2, 3, 50, 40)
    padded = torch.nn.functional.pad(images, (0, 24, 0, 14))
    with torch.no_grad():
        out = model(images, input_ids, attention_mask)
        ref = model(padded, input_ids, attention_mask)
    torch.testing.assert_close(out.logits, ref.logits[..., :50, :40], rtol=0, atol=0)
    torch.testing.assert_close(out.uncertainty, ref.uncertainty, rtol=0, atol=0)


def test_pad_input_false_raises(tiny_config, tiny_batch):
    model = build(tiny_config, pad_input=False).eval()
    input_ids, attention_mask = tiny_batch
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32), input_ids, attention_mask).logits.shape == (2, 1, 64, 32)
        with pytest.raises(ValueError, match="not a multiple of 32"):
            model(torch.randn(2, 3, 70, 64), input_ids, attention_mask)


def test_input_errors(full_model, tiny_batch):
    input_ids, attention_mask = tiny_batch
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        full_model(torch.randn(2, 1, 64, 64), input_ids, attention_mask)
    with pytest.raises(ValueError, match="batch sizes differ"):
        full_model(torch.randn(3, 3, 64, 64), input_ids, attention_mask)
    with pytest.raises(ValueError, match="floating-point"):
        full_model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), input_ids, attention_mask)


def test_text_padding_mask_equals_attention_mask(full_model, tiny_batch):
    model = full_model.eval()
    input_ids, attention_mask = tiny_batch
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(images, input_ids, attention_mask)
        b = model(images, input_ids, text_padding_mask=attention_mask == 0)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


@pytest.mark.parametrize("variant", list(ABLATIONS))
def test_ablation_rows(tiny_config, tiny_batch, variant):
    fusion, refinement = ABLATIONS[variant]
    model = build(tiny_config, use_fusion=fusion, use_refinement=refinement)
    assert model.config.variant == variant
    wrapper = model.decoder
    assert (wrapper.scorer is not None) == (fusion or refinement)
    assert (wrapper.fusion is not None) == fusion
    assert (wrapper.refinement is not None) == refinement
    out = model(torch.randn(2, 3, 64, 64), *tiny_batch)
    assert out.logits.shape == (2, 1, 64, 64)
    assert (out.uncertainty is None) == (variant == "Base")
    assert (out.refine_mask is None) == (not refinement)
    if not refinement:
        assert out.logits is out.coarse_logits
    counts = model.num_parameters()
    assert counts["ugf"] > 0 if fusion else counts["ugf"] == 0
    assert counts["udlr"] > 0 if refinement else counts["udlr"] == 0
    assert (counts["uncertainty"] == 0) == (variant == "Base")
    parts = ("vision", "text", "decoder", "rus", "ugf", "udlr")
    assert sum(counts[k] for k in parts) == counts["total"]
    out.logits.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# Tolerances of |bf16 autocast - float32| per output. bf16's unit roundoff is u = 2^-9 ~ 2e-3; the
# logits come out of ~20 bf16 matmuls / convs in a row (ConvNeXt, BERT, projections, decoder, UDLR),
# so their error is a few times 10 u ~ 2e-2 of their size (|logits| <= 2.1 here); U and M leave
# the network after fewer roundings (RUS on the stride-32 map). Measured with three seeds: at most
# 2.5e-2 on the logits and coarse logits (|x| <= 2.1), 3.5e-3 on U and M (|x| <= 0.8); the
# tolerances, 0.1 and 1.5e-2, are 4x those.
MODEL_BF16_ATOL = {"logits": 0.1, "coarse_logits": 0.1, "uncertainty": 1.5e-2, "refine_mask": 1.5e-2}


def test_bf16_autocast_matches_float32(tiny_config, tiny_batch):
    torch.manual_seed(0)
    model = CroBIMU(tiny_config)
    with torch.no_grad():  # move the zero-initialised branches away from zero so UDLR acts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images, *tiny_batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(images, *tiny_batch)
    assert (expected.logits - expected.coarse_logits).abs().max() > 1e-2  # the refinement is live
    for name, atol in MODEL_BF16_ATOL.items():
        out, want = getattr(got, name), getattr(expected, name)
        assert out.dtype == torch.bfloat16 and out.shape == want.shape, name
        torch.testing.assert_close(out.float(), want, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def test_refinement_starts_as_identity(full_model, tiny_batch):
    """UDLR's last conv is zero at init, so the Full model's logits equal its coarse logits."""
    model = full_model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), *tiny_batch)
    torch.testing.assert_close(out.logits, out.coarse_logits, rtol=0, atol=0)


# ----------------------------------------------------------------- parameters and groups


def test_param_groups_and_freeze(tiny_config):
    model = build(tiny_config, vision={"lr_multiplier": 0.5}, text={"lr_multiplier": 0.1})
    groups = {g["name"]: g for g in model.param_groups(1e-3)}
    assert set(groups) == {"vision", "text", "head"}
    assert groups["vision"]["lr"] == pytest.approx(5e-4)
    assert groups["text"]["lr"] == pytest.approx(1e-4)
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == model.num_parameters()["total"]
    assert {id(p) for p in groups["text"]["params"]} == {id(p) for p in model.text.backbone.parameters()}
    torch.optim.AdamW(model.param_groups(1e-3))  # accepted as is

    frozen = build(tiny_config, text={"freeze": True})
    groups = {g["name"]: g for g in frozen.param_groups(1e-3)}
    assert set(groups) == {"vision", "head"}
    assert frozen.num_parameters(trainable_only=True)["text"] == sum(
        p.numel() for p in frozen.text.proj.parameters()
    )


# ------------------------------------------------------------------- configs and presets


def test_config_json_round_trip(tmp_path: Path, tiny_config):
    assert ModelConfig is CroBIMUConfig
    text = tiny_config.to_json()
    assert CroBIMUConfig.from_json(text) == tiny_config
    path = tmp_path / "cfg.json"
    tiny_config.to_json(path)
    again = CroBIMUConfig.from_json(path)
    assert again == tiny_config
    assert again.vision.model_kwargs["dims"] == (16, 32, 64, 128)  # JSON lists come back as tuples
    assert isinstance(again.vision, VisionConfig) and isinstance(again.decoder, DecoderConfig)
    assert CroBIMUConfig.from_dict(json.loads(text)).to_dict() == tiny_config.to_dict()
    for cls in (VisionConfig, TextConfig, DecoderConfig):
        assert cls.from_json(cls().to_json()) == cls()


def test_config_validation_and_replace(tiny_config):
    with pytest.raises(ValueError, match="unknown key"):
        CroBIMUConfig.from_dict({**CroBIMUConfig().to_dict(), "use_fusoin": False})
    with pytest.raises(ValueError, match="unknown field"):
        tiny_config.replace(colour="red")
    with pytest.raises(ValueError, match="divisible"):
        CroBIMUConfig(dim=30)
    with pytest.raises(ValueError, match="four feature levels"):
        CroBIMUConfig(vision=VisionConfig(out_indices=(1, 2, 3)))
    with pytest.raises(ValueError, match="model_type"):
        TextConfig(hf_config={"hidden_size": 8})
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_config.dim = 8  # frozen
    changed = tiny_config.replace(use_fusion=False, decoder={"num_layers": 3})
    assert changed.decoder.num_layers == 3 and changed.decoder.num_heads == tiny_config.decoder.num_heads
    assert not changed.use_fusion and tiny_config.use_fusion
    assert changed.variant == "+UDLR"


def test_presets():
    assert {"paper", "tiny"} <= set(list_presets())
    paper = get_preset("paper")
    assert paper.vision.name == "convnext_base" and paper.text.name == "bert-base-uncased"
    assert (paper.dim, paper.decoder.num_layers, paper.decoder.num_heads, paper.decoder.num_points) == (256, 6, 8, 4)
    assert (paper.image_size, paper.text.max_tokens, paper.variant) == (480, 20, "Full")
    tiny = get_preset("tiny", use_refinement=False, text={"max_tokens": 12})
    assert tiny.vision.name == "convnext_atto" and tiny.text.name == FROM_SCRATCH and not tiny.text.pretrained
    assert tiny.dim == 64 and tiny.decoder.num_layers == 2 and tiny.image_size == 128
    assert tiny.text.max_tokens == 12 and not tiny.text.freeze and tiny.variant == "+UGF"
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_tiny_preset_builds_offline(monkeypatch: pytest.MonkeyPatch):
    """The tiny preset needs no file and no network: its text encoder is a small BERT learnt from scratch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = train_tokenizer(["the small white ship at the left of the pier", "a red car near the road"])
    config = get_preset("tiny")
    model = CroBIMU(config.replace(text={"hf_config": with_vocabulary(config.text.hf_config, tokenizer)}))
    assert model.text.hidden_dim == 128 and model.vision.widths == (40, 80, 160, 320)
    assert model.text.backbone.config.num_hidden_layers == 2
    assert model.text.backbone.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.num_parameters()["uncertainty"] < 0.05 * model.num_parameters()["total"]  # 2.7 %
    tokens = tokenizer(["the red ship"], padding="max_length", max_length=20, return_tensors="pt")
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 128, 128), tokens["input_ids"], tokens["attention_mask"])
    assert out.logits.shape == (1, 1, 128, 128) and torch.isfinite(out.logits).all()


@pytest.mark.slow
def test_core_package_does_not_import_encoders():
    code = (
        "import sys, uncertainty_rrsis; "
        "heavy = lambda: [m for m in ('timm', 'transformers') if m in sys.modules]; "
        "assert not heavy(), heavy(); "
        "from uncertainty_rrsis.models import get_preset, preset_recipe; get_preset('paper'); "
        "assert not heavy(), heavy();  # configs and presets without the encoders' packages\n"
        "from uncertainty_rrsis.models import CroBIMU; assert heavy() == ['timm', 'transformers'], heavy()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ compile


@pytest.mark.slow
def test_torch_compile_whole_model(tiny_config, tiny_batch):
    model = build(tiny_config).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = model(images, *tiny_batch)
    compiled = torch.compile(model)
    with torch.no_grad():
        out = compiled(images, *tiny_batch)
    assert isinstance(out, RiskGuidedOutput)
    for a, b in zip(out, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # saving through the compiled wrapper writes the plain model's keys
    state = compiled.state_dict_for_saving()
    assert not any("_orig_mod" in k for k in state)


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_exact(tmp_path: Path, tiny_config, tiny_batch, tiny_tokenizer):
    model = build(tiny_config, seed=3)
    with torch.no_grad():  # move every zero-initialised branch away from zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    folder = model.save_pretrained(tmp_path / "ckpt", tokenizer=tiny_tokenizer)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer").is_dir()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["config"]["text"]["pretrained"] is False
    assert saved["config"]["text"]["hf_config"]["hidden_size"] == 32
    assert saved["config"]["vision"]["weights"] is None

    loaded = CroBIMU.from_pretrained(folder)
    assert not loaded.training
    images = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        a, b = model(images, *tiny_batch), loaded(images, *tiny_batch)
    for x, y in zip(a, b):
        assert (x is None and y is None) or torch.equal(x, y)
    assert loaded.config.replace(text={"pretrained": True, "hf_config": None}) == tiny_config


def test_save_strips_wrapper_prefixes(tmp_path: Path, tiny_config, tiny_batch):
    model = build(tiny_config, seed=4).eval()
    model.vision = torch.compile(model.vision)  # a compiled submodule: keys get `_orig_mod.`
    assert any("_orig_mod." in k for k in model.state_dict())
    folder = model.save_pretrained(tmp_path / "a")
    keys = load_file(str(folder / "model.safetensors")).keys()
    assert not any("_orig_mod" in k or k.startswith("module.") for k in keys)

    # a file written with DDP's `module.` prefix loads too
    state = {f"module.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    save_file(state, str(folder / "model.safetensors"))
    loaded = CroBIMU.from_pretrained(folder)
    plain = build(tiny_config, seed=4).eval()
    with torch.no_grad():
        a = plain(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), *[t[:1] for t in tiny_batch])
        b = loaded(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), *[t[:1] for t in tiny_batch])
    assert torch.equal(a.logits, b.logits)


def test_strict_load_reports_missing_and_unexpected(tmp_path: Path, tiny_config):
    model = build(tiny_config, seed=5)
    folder = model.save_pretrained(tmp_path / "full")
    # 1) the config says Base but the weights are Full: unexpected uncertainty-module keys
    data = json.loads((folder / "config.json").read_text())
    data["config"]["use_fusion"] = data["config"]["use_refinement"] = False
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match=r"unexpected \(\d+.*decoder\.(scorer|fusion|refinement)\."):
        CroBIMU.from_pretrained(folder)
    with pytest.warns(UserWarning, match="partial load"):
        base, report = CroBIMU.from_pretrained(folder, strict=False, return_report=True)
    assert report.unexpected and not report.missing and base.decoder.scorer is None

    # 2) a missing tensor
    folder2 = model.save_pretrained(tmp_path / "missing")
    state = load_file(str(folder2 / "model.safetensors"))
    del state["vision.proj.0.0.weight"]
    save_file(state, str(folder2 / "model.safetensors"))
    with pytest.raises(RuntimeError, match=r"missing \(1.*vision\.proj\.0\.0\.weight"):
        CroBIMU.from_pretrained(folder2)

    with pytest.raises(FileNotFoundError, match="config.json"):
        CroBIMU.from_pretrained(tmp_path / "nowhere")


def test_documented_parameter_counts_match_the_model():
    """The parameter table of docs/reference_model.md, recounted (on the meta device: shapes only)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reference_model.md").read_text(encoding="utf-8")
    doc = re.sub(r"<!-- /?value[^>]*-->", "", doc)  # the numbers as a reader sees them (filled from result files)
    counts = {}
    for variant, (fusion, refinement) in ABLATIONS.items():
        cfg = get_preset("paper", use_fusion=fusion, use_refinement=refinement, vision={"requires_weights": False},
                         text={"pretrained": False, "hf_config": {"model_type": "bert"}})
        with torch.device("meta"):
            counts[variant] = CroBIMU(cfg).num_parameters()
    full = counts["Full"]
    expected_rows = [
        f"| {full['vision']:,} |", f"| {full['text']:,} |",
        f"| Decoder (pixel decoder + mask head) | {full['decoder']:,} |",
        f"| RUS | {full['rus']:,} |", f"| UGF (one instance shared by three levels) | {full['ugf']:,} |",
        f"| UDLR | {full['udlr']:,} |",
        f"| **{counts['Base']['total']:,}** |", f"| +UGF (RUS + UGF) | {counts['+UGF']['total']:,} |",
        f"| +UDLR (RUS + UDLR) | {counts['+UDLR']['total']:,} |", f"| **Full** total | **{full['total']:,}** |",
        f"add **{full['uncertainty']:,} parameters",
    ]
    for row in expected_rows:
        assert row in doc, f"docs/reference_model.md does not say {row!r}"


def test_the_training_size_is_a_multiple_of_the_size_divisor():
    from uncertainty_rrsis.models import get_preset

    with pytest.raises(ValueError, match=r"`image_size`=500 must be a multiple of `size_divisor`=32.*480 or 512"):
        get_preset("tiny", image_size=500)
    with pytest.raises(ValueError, match="must be a multiple"):
        get_preset("tiny", image_size=500, pad_input=False)  # without padding the model would refuse it
