"""No host-device synchronisation inside the modules, the wrapper, the losses or the reference model.

On a GPU, an op that reads a value on the host (``.item()``, ``bool(tensor)``), has a data-dependent
output size, or builds a tensor from Python data (a blocking host-to-device copy) makes the host wait
for every queued kernel, which costs latency in eager mode and breaks CUDA-graph capture. The probe of
``benchmarks/_syncs.py`` records such ops on any device, with the line that issued them, so these
CPU tests find what a CUDA run would.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from benchmarks._syncs import count_sync_prone
from uncertainty_rrsis import (
    OnlineErrorLoss,
    ReferringUncertaintyScorer,
    RiskGuidedLoss,
    UncertaintyDrivenRefinement,
    UncertaintyGatedFusion,
)

from helpers.decoders import field_inputs, toy_batch, toy_wrapper, wrap_field_decoder


def test_the_probe_finds_what_would_synchronise():
    x = torch.randn(2, 3)
    line = inspect.currentframe().f_lineno + 1  # the line of the lambda below
    hits = count_sync_prone(lambda: (x.sum().item(), bool(x.max() > 0), x.nonzero(), torch.tensor([1.0, 2.0])))
    ops = {h["op"] for h in hits}
    assert ops == {"_local_scalar_dense", "nonzero", "lift_fresh"}, hits
    # the probe names this file, relative to the repository, and the line
    assert all(h["where"] == f"tests/modules/test_host_syncs.py:{line}" for h in hits), hits
    assert sum(h["count"] for h in hits if h["op"] == "_local_scalar_dense") == 2, hits  # .item() and bool()


def test_modules_forward_and_backward_do_not_synchronise():
    b, c, tokens = 2, 16, 6
    rus = ReferringUncertaintyScorer(c)
    ugf = UncertaintyGatedFusion(c, num_heads=2)
    udlr = UncertaintyDrivenRefinement(c, hidden_dim=8, blur_kernel_size=3)
    loss_fn = OnlineErrorLoss(blur_kernel_size=3, warmup_steps=0)
    levels = [torch.randn(b, c, s, s, requires_grad=True) for s in (16, 8, 4)]
    text = torch.randn(b, tokens, c, requires_grad=True)
    pad = torch.arange(tokens).expand(b, tokens) >= 4
    feature = torch.randn(b, c, 32, 32, requires_grad=True)
    coarse = torch.randn(b, 1, 32, 32, requires_grad=True)
    target = torch.rand(b, 64, 64) > 0.5

    def step():
        u = rus(levels[-1], text, pad)
        fused = ugf(levels, text, u, pad)
        refined = udlr(feature, coarse, u)
        total = loss_fn(u, coarse, target) + refined.mean() + sum(f.mean() for f in fused)
        total.backward()

    assert count_sync_prone(step) == []


@pytest.mark.parametrize("kind", ["hook", "pair", "lavt", "caris"])
def test_wrapper_training_step_does_not_synchronise(kind):
    if kind in ("lavt", "caris"):
        model = wrap_field_decoder(kind)
        features, text, pad, target = field_inputs()
    else:
        model = toy_wrapper(kind)
        features, text, pad, target = toy_batch()
    loss_fn = RiskGuidedLoss()

    def step():
        loss_fn(model(features, text, pad), target).total.backward()

    step()
    assert count_sync_prone(step) == []


def test_reference_model_does_not_synchronise(tiny_config, tiny_batch):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(0)
    model = CroBIMU(tiny_config)
    ids, mask = tiny_batch
    images = torch.randn(2, 3, 64, 64)
    target = torch.rand(2, 64, 64) > 0.5
    loss_fn = RiskGuidedLoss()

    def step():
        loss_fn(model(images, ids, mask), target).total.backward()

    step()
    hits = count_sync_prone(step)
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        # the text encoder hands transformers a prepared 4-D mask, so it never reads the mask on the host
        assert hits == [], hits
    else:  # older transformers read the 2-D mask with `padding_mask.all()`; nothing of this library may appear
        assert all(h["where"].startswith("transformers/") for h in hits), hits
        assert sum(h["count"] for h in hits) <= 1, hits


def test_the_prepared_encoder_mask_gives_the_same_text_features(tiny_config, tiny_batch):
    pytest.importorskip("transformers")
    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(0)
    text = CroBIMU(tiny_config).text.eval()
    ids, mask = tiny_batch
    with torch.no_grad():
        ours, pad = text(ids, mask)
        reference = text.proj(text.backbone(input_ids=ids, attention_mask=mask).last_hidden_state)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert pad.dtype == torch.bool and pad.sum() > 0  # the batch does have padding
