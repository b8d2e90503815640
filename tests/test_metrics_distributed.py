"""``sync()`` over 2 gloo processes equals one process on the same samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uncertainty_rrsis.metrics import ReferringSegmentationMetrics, UncertaintyQualityMetrics

N_SAMPLES = 7  # does not divide by the world size
WORLD = 2


def _data():
    g = torch.Generator().manual_seed(123)
    gt = torch.rand(N_SAMPLES, 9, 7, generator=g) < 0.4
    pred = gt ^ (torch.rand(N_SAMPLES, 9, 7, generator=g) < 0.2)
    unc = torch.randn(N_SAMPLES, 1, 3, 2, generator=g)  # uncertainty logits on a coarse grid
    logits = (pred.float() * 2 - 1)[:, None] * (0.5 + torch.rand(N_SAMPLES, 1, 9, 7, generator=g))
    tags = [{"category": ["ship", "road", "tank"][i % 3], "thin": i % 2 == 0} for i in range(N_SAMPLES)]
    if N_SAMPLES > 5:
        tags[5]["rare"] = "only-on-rank-1"  # a group one rank never sees
    return pred, gt, unc, logits, tags


def _evaluate(indices):
    pred, gt, unc, logits, tags = _data()
    seg, unq = ReferringSegmentationMetrics(), UncertaintyQualityMetrics(bins=64)
    for i in indices:  # batches of one
        seg.update(pred[i : i + 1], gt[i : i + 1], tags=[tags[i]])
        unq.update_from_batch(unc[i : i + 1], logits[i : i + 1], {"mask": gt[i : i + 1], "tags": [tags[i]]})
    return seg, unq


def _worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        seg, unq = _evaluate(range(rank, N_SAMPLES, WORLD))  # sharded without padding
        seg.sync()
        unq.sync()
        if rank == 0:
            torch.save(
                {"seg": seg.compute(), "parts": seg.compute_breakdown(), "unq": unq.compute(),
                 "unq_parts": unq.compute_breakdown()}, out_file
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_sync_matches_single_process(tmp_path):
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file)), nprocs=WORLD, join=True)
    got = torch.load(out_file, weights_only=False)
    seg, unq = _evaluate(range(N_SAMPLES))
    assert got["seg"] == pytest.approx(seg.compute(), abs=1e-12)
    assert got["seg"]["count"] == N_SAMPLES
    assert got["parts"].keys() == seg.compute_breakdown().keys()
    assert got["parts"]["rare=only-on-rank-1"]["count"] == 1
    for key, value in seg.compute_breakdown().items():
        assert got["parts"][key] == pytest.approx(value, abs=1e-12)
    single = unq.compute()
    assert single["failure/count"] == N_SAMPLES and "margin_pooled/AUROC" in single and "outcome/FP/u_mean" in single
    for key, value in single.items():
        both_nan = math.isnan(value) and math.isnan(got["unq"][key])
        assert both_nan or math.isclose(got["unq"][key], value, abs_tol=1e-12), key
    parts = unq.compute_breakdown()
    assert got["unq_parts"].keys() == parts.keys()
    assert got["unq_parts"]["rare=only-on-rank-1"]["failure/count"] == 1
    for group, values in parts.items():
        for key, value in values.items():
            assert math.isclose(got["unq_parts"][group][key], value, abs_tol=1e-12) or math.isnan(value), (group, key)
