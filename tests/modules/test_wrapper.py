"""RiskGuidedDecoder and RiskGuidedLoss on decoders this project did not design."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss, RiskGuidedOutput

from helpers.decoders import TOY_DIM as DIM
from helpers.decoders import ToyFPNDecoder
from helpers.decoders import toy_batch as batch
from helpers.decoders import toy_wrapper as make

ROOT = Path(__file__).resolve().parents[2]


def train_a_few_steps(model, *, steps=3, seed=0):
    """AdamW steps on one random batch; returns ``L_seg(P_fg)`` per step."""
    criterion = RiskGuidedLoss(lambda_unc=1.0, lambda_ref=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    features, text, pad, target = batch(seed)
    losses = []
    for step in range(steps):
        loss = criterion(model(features, text, pad), target, step=step)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.seg.item())
    return losses


@pytest.mark.parametrize("kind", ["hook", "pair"])
def test_training_gives_every_new_parameter_a_gradient(kind):
    model = make(kind)
    seg_losses = train_a_few_steps(model, steps=3)
    assert all(torch.isfinite(torch.tensor(seg_losses))) and seg_losses[-1] < seg_losses[0]
    features, text, pad, target = batch(1)
    out = model(features, text, pad)
    model.zero_grad()
    RiskGuidedLoss()(out, target, step=10).total.backward()
    for name, p in model.named_parameters():
        if not name.startswith("decoder."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["hook", "pair"])
def test_output_shapes(kind):
    model = make(kind)
    features, text, pad, _ = batch(size=96)
    out = model(features, text, pad)
    assert isinstance(out, RiskGuidedOutput)
    assert out.logits.shape == out.coarse_logits.shape == out.refine_mask.shape == (2, 1, 24, 24)
    assert out.uncertainty.shape == (2, 1, 3, 3)
    # UDLR starts at zero: the refined logits equal the coarse ones at init
    assert torch.equal(out.logits, out.coarse_logits)


@pytest.mark.parametrize("kind", ["hook", "pair"])
def test_base_row_reproduces_bare_decoder_exactly(kind):
    model = make(kind, use_fusion=False, use_refinement=False)
    assert model.scorer is None and model.fusion is None and model.refinement is None
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.decoder.parameters())
    features, text, pad, _ = batch(2)
    out = model(features, text, pad)
    bare = model.decoder(features, text, pad)
    bare = bare[0] if isinstance(bare, tuple) else bare
    assert torch.equal(out.logits, bare) and torch.equal(out.coarse_logits, bare)
    assert out.uncertainty is None and out.refine_mask is None


def test_ablation_rows_have_the_right_modules():
    for fusion, refinement in [(True, False), (False, True), (True, True)]:
        model = make("hook", use_fusion=fusion, use_refinement=refinement)
        assert model.scorer is not None
        assert (model.fusion is not None) == fusion and (model.refinement is not None) == refinement
        out = model(*batch()[:3])
        assert out.uncertainty is not None and (out.refine_mask is not None) == refinement


class RecordingDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(DIM, 1, 1)
        self.seen = None

    def forward(self, features, text, text_padding_mask=None):
        self.seen = [f.clone() for f in features]
        return self.head(features[0]), features[0]


def test_fusion_touches_only_the_fused_levels():
    decoder = RecordingDecoder()
    model = RiskGuidedDecoder(decoder, DIM, num_heads=2, fused_levels=(2, 3), fusion_kwargs={"norm": False})
    with torch.no_grad():
        model.fusion.out_proj.weight.normal_()
    features, text, pad, _ = batch()
    model(features, text, pad)
    assert torch.equal(decoder.seen[0], features[0]) and torch.equal(decoder.seen[1], features[1])
    assert not torch.equal(decoder.seen[2], features[2]) and not torch.equal(decoder.seen[3], features[3])


def test_hook_captures_the_named_feature():
    model = make("hook")
    features, text, pad, _ = batch()
    captured = {}
    model.decoder.fpn.out.register_forward_hook(lambda m, a, o: captured.setdefault("f", o))
    with torch.no_grad():
        model.refinement.head[-1].weight.normal_()
    out = model(features, text, pad)
    expected = model.refinement(captured["f"], out.coarse_logits, out.uncertainty)
    torch.testing.assert_close(out.logits, expected)


def test_missing_mask_feature_is_a_clear_error():
    model = RiskGuidedDecoder(ToyFPNDecoder(DIM), DIM, num_heads=2)
    with pytest.raises(ValueError, match=r"returned only coarse logits.*mask_feature_from=.*use_refinement=False"):
        model(*batch()[:3])
    # without refinement the same decoder is fine: its logits are the output
    out = RiskGuidedDecoder(ToyFPNDecoder(DIM), DIM, num_heads=2, use_refinement=False)(*batch()[:3])
    assert out.logits is out.coarse_logits and out.refine_mask is None and out.logits.shape == (2, 1, 16, 16)


def test_unknown_mask_feature_name_fails_at_construction():
    with pytest.raises(ValueError, match=r"mask_feature_from='fpn.nope' names no submodule.*fpn.out"):
        RiskGuidedDecoder(ToyFPNDecoder(DIM), DIM, mask_feature_from="fpn.nope")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f, t, p: ([x[:, :8] for x in f], t, p), r"`features\[0\]` must have 16 channels \(dim = 16\); got 8"),
        (lambda f, t, p: (f[0], t, p), r"`features` must be a non-empty list"),
        (lambda f, t, p: (f[:2], t, p), r"fused_levels \(1, 2, 3\) index beyond the 2 feature levels"),
        (lambda f, t, p: (f, t[:1], p), r"batch sizes differ"),
        (lambda f, t, p: (f, t, p.float()), r"bool tensor"),
    ],
)
def test_bad_input_messages(mutate, match):
    features, text, pad, _ = batch()
    with pytest.raises(ValueError, match=match):
        make("pair")(*mutate(features, text, pad))


@pytest.mark.slow
def test_example_script_runs_and_checks_step_zero():
    """The example wraps the six look-alikes with their recipes, checks step 0 against the bare
    decoder bit for bit (it exits non-zero otherwise), trains one step and prints the added parameters."""
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "wrap_your_decoder.py"), "--c4-dims", "64",
                             "--text-dim", "32", "--size", "64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("equals the bare decoder's, bit for bit") == 6
    for name in ("lavt", "fianet", "rmsin", "aeroreformer", "cadformer", "caris"):
        assert f"\n{name}: " in "\n" + result.stdout
    assert result.stdout.count("RUS + UGF + UDLR add") == 6
