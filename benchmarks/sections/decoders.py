"""Section ``decoders``: Base vs Full around a second decoder, LAVT's ``SimpleDecoding`` (the
look-alike of ``examples/field_decoders.py``) wrapped with the ``lavt`` recipe.

Swin-B widths (128, 256, 512, 1024), BERT-base-wide text (768, 20 tokens), the main batch and size;
inference and training step (RiskGuidedLoss, AdamW) timed interleaved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from benchmarks._common import REAL_TOKENS, autocast, log
from benchmarks._measure import time_interleaved

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    from benchmarks._examples import field_decoders
    from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss

    a = runner.args
    device = runner.device
    widths, batch, size = (128, 256, 512, 1024), a.main_batch, a.main_size
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(batch, c, size // st, size // st, generator=g).to(device)
                for c, st in zip(widths, (4, 8, 16, 32))]
    text = torch.randn(batch, 20, 768, generator=g).to(device)
    pad = (torch.arange(20) >= REAL_TOKENS).expand(batch, 20).to(device)
    target = (torch.rand(batch, size, size, generator=g) > 0.7).to(device)
    models = {}
    for name, full in (("Base", False), ("Full", True)):
        torch.manual_seed(0)
        decoder = field_decoders().build_decoder("lavt", widths, 768)
        models[name] = RiskGuidedDecoder.from_recipe(
            "lavt", decoder, widths, text_dim=768, use_fusion=full, use_refinement=full).to(device)
    records = []
    for mode in ("infer", "train"):
        fns = {}
        for name, model in models.items():
            if mode == "infer":
                def fn(model=model):
                    model.eval()
                    with torch.no_grad(), autocast(device, a.dtype[0]):
                        return model(features, text, pad)
            else:
                opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
                loss_fn = RiskGuidedLoss()

                def fn(model=model, opt=opt, loss_fn=loss_fn):
                    model.train()
                    with autocast(device, a.dtype[0]):
                        loss = loss_fn(model(features, text, pad), target).total
                    loss.backward()
                    opt.step()
                    model.zero_grad(set_to_none=True)
            fns[name] = fn
        repeats = a.repeats if mode == "infer" else a.train_repeats
        timing = time_interleaved(fns, device, warmup=a.warmup, repeats=repeats, max_seconds=a.max_seconds,
                                  min_repeats=min(a.min_repeats, repeats), log=log)
        for name in fns:
            params = sum(p.numel() for p in models[name].parameters())
            records.append({"variant": name, "decoder": "SimpleDecoding (lavt recipe)", "mode": mode,
                            "dtype": a.dtype[0], "batch": batch, "image_size": size, "latency": timing[name],
                            "params": {"total": params}})
        log(f"  SimpleDecoding {mode}: Base {timing['Base']['median_ms']:.2f} ms, Full "
            f"{timing['Full']['median_ms']:.2f} ms")
    models.clear()
    features, text, target = [], None, None  # the inputs go before the next section allocates
    runner.free()
    return {"records": records}
