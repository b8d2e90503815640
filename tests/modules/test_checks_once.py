"""Inputs are checked once, at the entry the user calls; the parts of a composite trust it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, UncertaintyGatedFusion
from uncertainty_rrsis._contracts import checks_enabled, trust_inputs

from helpers.decoders import ToyPairDecoder, field_inputs, wrap_field_decoder


def count_checks(module: nn.Module) -> dict[str, int]:
    """Wrap every ``_check`` of ``module``'s submodules with a counter (instance attributes)."""
    counts: dict[str, int] = {}
    for name, sub in module.named_modules():
        if hasattr(type(sub), "_check"):
            key = name or type(sub).__name__
            original = sub._check

            def counted(*args, _original=original, _key=key, **kwargs):
                counts[_key] = counts.get(_key, 0) + 1
                return _original(*args, **kwargs)

            sub._check = counted
    return counts


@pytest.mark.parametrize("kind", ["lavt", "caris"])
def test_the_wrapper_checks_once_and_its_parts_not_again(kind):
    model = wrap_field_decoder(kind)
    counts = count_checks(model)
    model(*field_inputs()[:3])
    assert counts == {type(model).__name__: 1}
    assert not model.scorer.check_inputs and model.check_inputs


def test_a_part_called_alone_still_checks_when_not_in_a_composite():
    ugf = UncertaintyGatedFusion(16, num_heads=4)
    with pytest.raises(ValueError, match="`visual` must have shape"):
        ugf(torch.randn(2, 8, 4, 4), torch.randn(2, 3, 16), torch.randn(2, 1, 2, 2))


def test_trust_inputs_leaves_modules_without_checks_alone():
    decoder = ToyPairDecoder(16)
    model = RiskGuidedDecoder(decoder, 16, num_heads=4)
    assert not hasattr(decoder, "check_inputs")  # the user's decoder is not ours to mark
    assert not checks_enabled(model.fusion) and checks_enabled(model)
    trust_inputs(None, model)
    assert not checks_enabled(model)


def test_the_reference_model_checks_once(tiny_config, tiny_batch):
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(0)
    model = CroBIMU(tiny_config)
    counts = count_checks(model)
    ids, mask = tiny_batch
    model(torch.randn(2, 3, 64, 64), ids, mask)
    # CroBIMU's check runs the text encoder's token / mask check as part of itself, once
    assert counts == {"CroBIMU": 1, "text": 1}
    with pytest.raises(ValueError, match="attention_mask` is a bool tensor"):
        model(torch.randn(2, 3, 64, 64), ids, mask.bool())
