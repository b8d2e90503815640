"""Wrap the decoder of a referring-segmentation model you already have, without changing it.

Six published decoders, each wrapped with its named recipe in one line::

    model = RiskGuidedDecoder.from_recipe("lavt", decoder, widths, text_dim=768,
                                          fusion_kwargs={"norm": False})

``lavt``, ``fianet``, ``rmsin``, ``aeroreformer``, ``cadformer``, ``caris``. The decoders here
are the look-alikes of ``field_decoders.py`` (the same layers and names as the classes in those
repositories); in your code, pass the decoder you built from your repository instead.

For each: wrap; check that the wrapped model's step-0 output equals the bare decoder's, bit for
bit (the script exits non-zero otherwise); run one training step with RiskGuidedLoss (the paper's Eq. 18)
(Eq. 18); print what the modules add and where UGF sits.

Run: ``python examples/wrap_your_decoder.py``  (CPU, seconds; ``--help`` for sizes and names)
"""

from __future__ import annotations

import argparse

import torch
from field_decoders import DECODERS, build_decoder, call_as_published

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss
from uncertainty_rrsis.adapters import foreground_logit
from uncertainty_rrsis.recipes import get_recipe


def random_batch(widths: tuple[int, ...], text_dim: int, size: int, *, batch: int = 2, length: int = 20,
                 generator: torch.Generator):
    """Backbone maps at strides 4/8/16/32 of a ``size`` image, BERT-like words, padding mask, target."""
    features = [torch.randn(batch, c, size // s, size // s, generator=generator)
                for c, s in zip(widths, (4, 8, 16, 32))]
    text = torch.randn(batch, length, text_dim, generator=generator)
    pad = torch.arange(length).expand(batch, length) >= torch.tensor([[9], [14]][:batch])  # True = padding
    target = torch.rand(batch, size, size, generator=generator) > 0.8
    return features, text, pad, target


def demo(name: str, widths: tuple[int, ...], text_dim: int, size: int) -> dict:
    torch.manual_seed(0)
    decoder = build_decoder(name, widths, text_dim)
    # A decoder you trained before: norm=False keeps UGF an exact identity at step 0 (the paper's
    # LayerNorm of Eq. 12 would change what the trained decoder reads). Leave it at its default
    # (True) when training the decoder together with the modules from the start.
    model = RiskGuidedDecoder.from_recipe(name, decoder, widths, text_dim=text_dim, fusion_kwargs={"norm": False})
    generator = torch.Generator().manual_seed(0)
    features, text, pad, target = random_batch(widths, text_dim, size, generator=generator)

    # 1. step 0: the wrapped model returns what the decoder alone returns, bit for bit
    model.eval()
    with torch.no_grad():
        out = model(features, text, pad)
        expected = foreground_logit(call_as_published(name, decoder, features, text, pad))
    if not torch.equal(out.logits, expected):
        gap = (out.logits - expected).abs().max().item()
        raise SystemExit(f"{name}: the wrapped model differs from the bare decoder at step 0 by {gap:.3g}")

    # 2. one training step with RiskGuidedLoss (the paper's Eq. 18)
    model.train()
    criterion = RiskGuidedLoss(lambda_unc=1.0, lambda_ref=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = criterion(model(features, text, pad), target, step=0)
    optimizer.zero_grad()
    losses.total.backward()
    optimizer.step()

    # 3. what the modules add, and where
    recipe = get_recipe(name)
    base = sum(p.numel() for p in decoder.parameters())
    added = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder."))
    print(f"{name}: {recipe.decoder}")
    print(f"  UGF at {', '.join(model.fuse_at)} (width {model.fusion_dim}); F from {model.mask_feature_from}")
    print("  step 0: the wrapped output equals the bare decoder's, bit for bit")
    print("  one step: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.as_floats().items()))
    print(f"  decoder {base:,} parameters; RUS + UGF + UDLR add {added:,}")
    return {"decoder_params": base, "added_params": added, **losses.as_floats()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", choices=DECODERS, nargs="*", default=list(DECODERS),
                        help="the decoders to wrap (default: all six)")
    parser.add_argument("--c4-dims", type=int, default=256,
                        help="width of the coarsest backbone level (Swin-B: 1024; default 256 for a quick run)")
    parser.add_argument("--text-dim", type=int, default=768, help="width of the word features (BERT-base: 768)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels, a multiple of 32")
    args = parser.parse_args(argv)
    widths = (args.c4_dims // 8, args.c4_dims // 4, args.c4_dims // 2, args.c4_dims)
    return {name: demo(name, widths, args.text_dim, args.size) for name in args.decoder}


if __name__ == "__main__":
    main()
