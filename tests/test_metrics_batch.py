"""``UncertaintyQualityMetrics.update_from_batch``: model outputs + a collated batch, no glue in the loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uncertainty_rrsis.metrics import UncertaintyQualityMetrics


def _outputs(seed: int = 0, *, batch: int = 3, size: int = 16, logit_size: int = 8, unc_size: int = 4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, size, size, generator=g) < 0.3
    logits = torch.randn(batch, 1, logit_size, logit_size, generator=g) * 3
    unc = torch.randn(batch, 1, unc_size, unc_size, generator=g)
    return mask, logits, unc


def test_matches_the_explicit_resize_and_error_map():
    mask, logits, unc = _outputs()
    metric = UncertaintyQualityMetrics(bins=50)
    metric.update_from_batch(unc, logits, {"mask": mask, "image": torch.zeros(3, 3, 16, 16)})

    def resize(x):
        return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)

    error = (resize(logits)[:, 0] > 0) != mask
    prob = torch.sigmoid(resize(unc))[:, 0]
    expected = UncertaintyQualityMetrics(bins=50)
    expected.update(prob, error)
    assert torch.equal(metric.histograms(), expected.histograms())
    assert metric.compute()["pixels"] == 3 * 16 * 16
    assert metric.compute()["error_rate"] == pytest.approx(float(error.float().mean()))


def test_logits_already_at_the_mask_size_are_used_as_they_are():
    mask, _, unc = _outputs(1)
    logits = torch.where(mask, 5.0, -5.0)[:, None]  # a perfect prediction: no error pixel
    metric = UncertaintyQualityMetrics(bins=20)
    metric.update_from_batch(unc, logits, {"mask": mask})
    out = metric.compute()
    assert out["error_rate"] == 0.0 and out["pixels"] == mask.numel()


def test_an_uncertainty_map_equal_to_the_errors_scores_auroc_one():
    mask, logits, _ = _outputs(2, logit_size=16)
    error = (logits[:, 0] > 0) != mask
    assert error.any() and (~error).any()
    unc = torch.where(error, 8.0, -8.0)[:, None]  # at the mask size: no resize blurs it
    metric = UncertaintyQualityMetrics(bins=100)
    metric.update_from_batch(unc, logits, {"mask": mask})
    assert metric.compute()["AUROC"] == pytest.approx(1.0)


def test_batches_accumulate_like_one_batch():
    mask, logits, unc = _outputs(3, batch=4)
    whole, parts = UncertaintyQualityMetrics(bins=30), UncertaintyQualityMetrics(bins=30)
    whole.update_from_batch(unc, logits, {"mask": mask})
    for sl in (slice(0, 1), slice(1, 4)):
        parts.update_from_batch(unc[sl], logits[sl], {"mask": mask[sl]})
    assert torch.equal(whole.histograms(), parts.histograms())


@pytest.mark.parametrize(
    ("unc_shape", "logit_shape", "needle"),
    [
        ((3, 2, 4, 4), (3, 1, 8, 8), r"uncertainty_logits must be \(B, 1, h, w\) with B = 3.*\(3, 2, 4, 4\)"),
        ((3, 1, 4, 4), (2, 1, 8, 8), r"logits must be \(B, 1, h, w\) with B = 3.*\(2, 1, 8, 8\)"),
        ((3, 4, 4), (3, 1, 8, 8), r"uncertainty_logits .*got \(3, 4, 4\)"),
    ],
)
def test_wrong_shapes_are_clear_errors(unc_shape, logit_shape, needle):
    mask = torch.zeros(3, 16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match=needle):
        UncertaintyQualityMetrics().update_from_batch(torch.zeros(unc_shape), torch.zeros(logit_shape), {"mask": mask})


def test_a_batch_without_masks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"batch must hold 'mask'.*\['image'\]"):
        UncertaintyQualityMetrics().update_from_batch(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4),
                                                      {"image": torch.zeros(1, 3, 4, 4)})
