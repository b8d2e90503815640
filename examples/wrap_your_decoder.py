"""Wrap a referring-segmentation decoder you already have with the CroBIM-U modules.

Two decoders that this library did not design are wrapped here:

* ``LAVTStyleDecoder``: a LAVT / RMSIN-style top-down FPN that fuses the four levels and returns
  only the foreground logits. Its high-resolution feature ``F`` is captured from the submodule
  named ``"fuse.out"`` by a forward hook, so the decoder's code is not changed.
* ``PairDecoder``: a decoder that returns ``(coarse_logits, mask_feature)`` itself.

Each is trained for a few steps on random data with the paper's objective (Eq. 18).

Run: ``python examples/wrap_your_decoder.py``  (CPU, a few seconds)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU())


class _Fuse(nn.Module):
    """Top-down fusion of a coarse map into a finer one (one LAVT/RMSIN decoder stage)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = _ConvBlock(2 * dim, dim)
        self.out = _ConvBlock(dim, dim)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.block(torch.cat([fine, coarse], dim=1)))


class LAVTStyleDecoder(nn.Module):
    """FPN decoder over strides 4/8/16/32 that gates each level by the sentence and returns logits only.

    Shapes: features list of (B, dim, H_i, W_i) finest first; text (B, L, dim) -> (B, 1, H_0, W_0).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text_gate = nn.Linear(dim, dim)
        self.top = nn.ModuleList([_Fuse(dim) for _ in range(2)])
        self.fuse = _Fuse(dim)  # the last stage: its ``out`` is the high-resolution feature F
        self.classifier = nn.Conv2d(dim, 1, 1)

    def forward(self, features, text, text_padding_mask=None):
        keep = torch.ones(text.shape[:2], dtype=text.dtype, device=text.device)
        if text_padding_mask is not None:
            keep = (~text_padding_mask).to(text.dtype)
        sentence = (text * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        gate = torch.sigmoid(self.text_gate(sentence))[:, :, None, None]
        x = features[3] * gate
        x = self.top[0](features[2], x)
        x = self.top[1](features[1], x)
        x = self.fuse(features[0], x)
        return self.classifier(x)


class PairDecoder(nn.Module):
    """A decoder that returns ``(coarse_logits, mask_feature)`` itself."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.inner = LAVTStyleDecoder(dim)

    def forward(self, features, text, text_padding_mask=None):
        captured = {}
        handle = self.inner.fuse.out.register_forward_hook(lambda m, a, out: captured.setdefault("f", out))
        try:
            logits = self.inner(features, text, text_padding_mask)
        finally:
            handle.remove()
        return logits, captured["f"]


def random_batch(batch: int, dim: int, size: int, length: int = 6, *, generator: torch.Generator):
    """Random features at strides 4/8/16/32 of a ``size`` image, text, padding mask and target."""
    features = [torch.randn(batch, dim, size // s, size // s, generator=generator) for s in (4, 8, 16, 32)]
    text = torch.randn(batch, length, dim, generator=generator)
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[:, length // 2 :] = torch.rand(batch, length - length // 2, generator=generator) > 0.5
    target = torch.rand(batch, size, size, generator=generator) > 0.7
    return features, text, pad, target


def train_a_few_steps(model: RiskGuidedDecoder, *, steps: int = 5, dim: int = 32, size: int = 64, seed: int = 0):
    """Fit ``model`` to one random batch for ``steps`` AdamW steps; returns ``L_seg(P_fg)`` per step."""
    generator = torch.Generator().manual_seed(seed)
    criterion = RiskGuidedLoss(lambda_unc=1.0, lambda_ref=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    features, text, pad, target = random_batch(2, dim, size, generator=generator)
    losses = []
    for step in range(steps):
        out = model(features, text, pad)
        loss = criterion(out, target, step=step)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.seg.item())
    return losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="training steps per decoder (default 20)")
    parser.add_argument("--dim", type=int, default=32, help="feature width (default 32)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # (a) a decoder that returns only logits: F comes from a hook on "fuse.out"
    wrapped = RiskGuidedDecoder(LAVTStyleDecoder(args.dim), args.dim, num_heads=4, mask_feature_from="fuse.out")
    # (b) a decoder that returns (logits, F)
    paired = RiskGuidedDecoder(PairDecoder(args.dim), args.dim, num_heads=4)

    for name, model in (("LAVT-style, F by hook", wrapped), ("returns (logits, F)", paired)):
        losses = train_a_few_steps(model, steps=args.steps, dim=args.dim)
        added = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder."))
        base = sum(p.numel() for p in model.decoder.parameters())
        print(f"{name:24s} L_seg {losses[0]:.3f} -> {losses[-1]:.3f}   "
              f"decoder {base:,} params, modules add {added:,} ({100 * added / base:.1f}%)")


if __name__ == "__main__":
    main()
