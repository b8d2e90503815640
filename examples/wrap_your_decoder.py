"""Wrap the decoder of a referring-segmentation model you already have, without changing it.

Two decoders written here in the style of the field's, each wrapped as it is:

* ``SimpleDecoding``, in the style of LAVT and RMSIN: called as ``decoder(x_c4, x_c3, x_c2, x_c1)``
  (four positional maps, coarsest first, at the backbone's widths C, C/2, C/4, C/8), no text
  argument (the language was fused inside the backbone), BatchNorm, **two-class** logits at
  stride 4. Wrapped with per-level widths, ``call=call_coarsest_first``,
  ``unpack=foreground_logit``, UGF on the backbone levels (one UGF per width) and ``F`` taken from
  the last fusion stage by a hook.
* ``PixelDecoder``, in the style of CARIS and Mask2Former: takes the list of multi-width backbone
  maps, projects the three coarsest with its own 1x1 ``input_convs`` (coarsest first) to an
  internal width, reads text (B, L, 768) with a Hugging Face keep-mask (1 = token), returns
  foreground logits only. Wrapped with ``call=call_with_keep_mask`` and UGF **inside** the decoder
  on the outputs of ``input_convs`` (``fuse_at``), where the paper puts it.

For each: wrap, check that the wrapped model's step-0 output equals the bare decoder's, run one
training step with the paper's objective (Eq. 18), print the parameters the modules add.

Run: ``python examples/wrap_your_decoder.py``  (CPU, seconds; ``--help`` for sizes)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss
from uncertainty_rrsis.adapters import call_coarsest_first, call_with_keep_mask, foreground_logit

# =============================================================================================
# Two decoders as they exist in their own repositories: nothing below knows about the wrapper.
# =============================================================================================


class _TopDownStage(nn.Module):
    """Upsample the coarser map to the skip's size, concatenate, two conv3x3-BN-ReLU."""

    def __init__(self, coarse_dim: int, skip_dim: int, out_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(coarse_dim + skip_dim, out_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.body(torch.cat([coarse, skip], dim=1))


class SimpleDecoding(nn.Module):
    """LAVT / RMSIN-style decoder: ``forward(x_c4, x_c3, x_c2, x_c1) -> (B, 2, H/4, W/4)``.

    Shapes: x_c4 (B, C, H/32, W/32), x_c3 (B, C/2, H/16, W/16), x_c2 (B, C/4, H/8, W/8),
    x_c1 (B, C/8, H/4, W/4) with C = ``c4_dims``; hidden width C/2.
    """

    def __init__(self, c4_dims: int) -> None:
        super().__init__()
        hidden = c4_dims // 2
        self.fuse_c3 = _TopDownStage(c4_dims, c4_dims // 2, hidden)
        self.fuse_c2 = _TopDownStage(hidden, c4_dims // 4, hidden)
        self.fuse_c1 = _TopDownStage(hidden, c4_dims // 8, hidden)  # its output is the stride-4 feature
        self.classifier = nn.Conv2d(hidden, 2, 1)  # background, foreground

    def forward(self, x_c4, x_c3, x_c2, x_c1):
        x = self.fuse_c3(x_c4, x_c3)
        x = self.fuse_c2(x, x_c2)
        x = self.fuse_c1(x, x_c1)
        return self.classifier(x)


class PixelDecoder(nn.Module):
    """CARIS / Mask2Former-style decoder: ``forward(features, text, attention_mask) -> (B, 1, H/4, W/4)``.

    The three coarsest levels are projected by ``input_convs`` (coarsest first) to width
    ``dim``; each projected level attends to the words; a top-down path adds the stride-4
    level; ``mask_features`` gives the per-pixel embedding, which is matched against a sentence
    embedding for one foreground logit per pixel.

    Shapes: features list of (B, in_dims[i], H_i, W_i) finest first; text (B, L, text_dim);
    attention_mask (B, L), 1 = token, 0 = padding.
    """

    def __init__(self, in_dims: tuple[int, ...], dim: int = 256, text_dim: int = 768, num_heads: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.input_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32, dim)) for c in reversed(in_dims[1:])
        )
        self.text_proj = nn.Linear(text_dim, dim)
        self.word_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_dims[0], dim, 1), nn.GroupNorm(32, dim))
        self.output_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(32, dim), nn.ReLU())
        self.mask_features = nn.Conv2d(dim, dim, 1)
        self.sentence_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, features, text, attention_mask):
        words = self.text_proj(text)
        ignore = attention_mask == 0
        levels = []
        for conv, x in zip(self.input_convs, reversed(features[1:])):  # coarsest first
            x = conv(x)
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            attended, _ = self.word_attention(tokens, words, words, key_padding_mask=ignore)
            levels.append((tokens + attended).transpose(1, 2).reshape(b, c, h, w))
        x = levels[0]
        for level in [*levels[1:], self.lateral_conv(features[0])]:
            x = level + F.interpolate(x, size=level.shape[-2:], mode="bilinear", align_corners=False)
        pixel = self.mask_features(self.output_conv(x))
        keep = attention_mask.to(words.dtype)[..., None]
        sentence = self.sentence_embed((words * keep).sum(1) / keep.sum(1).clamp_min(1.0))
        return torch.einsum("bchw,bc->bhw", pixel, sentence)[:, None]


# =============================================================================================
# Wrapping them
# =============================================================================================

INPUT_CONVS = ("input_convs.0", "input_convs.1", "input_convs.2")


def wrap_simple_decoding(c4_dims: int, text_dim: int, **options) -> RiskGuidedDecoder:
    """A LAVT / RMSIN ``SimpleDecoding`` with RUS, UGF (one per level width) and UDLR."""
    widths = (c4_dims // 8, c4_dims // 4, c4_dims // 2, c4_dims)  # finest first
    return RiskGuidedDecoder(
        SimpleDecoding(c4_dims),
        widths,
        text_dim=text_dim,
        call=call_coarsest_first,          # decoder(f[3], f[2], f[1], f[0]); it takes no text
        unpack=foreground_logit,           # (B, 2, H, W) -> (B, 1, H, W)
        mask_feature_from="fuse_c1",       # F = the last fusion stage's output
        mask_feature_dim=c4_dims // 2,
        **options,
    )


def wrap_pixel_decoder(in_dims: tuple[int, ...], dim: int, text_dim: int, **options) -> RiskGuidedDecoder:
    """A CARIS / Mask2Former-style pixel decoder with RUS, UGF on its input projections and UDLR."""
    return RiskGuidedDecoder(
        PixelDecoder(in_dims, dim, text_dim),
        in_dims,
        text_dim=text_dim,
        call=call_with_keep_mask,          # decoder(features, text, attention_mask with 1 = token)
        fuse_at=INPUT_CONVS,               # UGF on the decoder's projected levels, once, before decoding
        fusion_dim=dim,
        mask_feature_from="mask_features",
        **options,
    )


def random_batch(widths: tuple[int, ...], text_dim: int, size: int, *, batch: int = 2, length: int = 20,
                 generator: torch.Generator):
    """Backbone maps at strides 4/8/16/32 of a ``size`` image, BERT-like text, padding mask, target."""
    features = [torch.randn(batch, c, size // s, size // s, generator=generator)
                for c, s in zip(widths, (4, 8, 16, 32))]
    text = torch.randn(batch, length, text_dim, generator=generator)
    pad = torch.arange(length).expand(batch, length) >= torch.tensor([[9], [14]][:batch])  # True = padding
    target = torch.rand(batch, size, size, generator=generator) > 0.8
    return features, text, pad, target


def bare_output(model: RiskGuidedDecoder, features, text, pad) -> torch.Tensor:
    """The decoder called the way its own repository calls it, as one foreground logit."""
    if isinstance(model.decoder, SimpleDecoding):
        return foreground_logit(model.decoder(*reversed(features)))
    return model.decoder(features, text, (~pad).long())


def demo(name: str, model: RiskGuidedDecoder, widths, text_dim: int, size: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    features, text, pad, target = random_batch(widths, text_dim, size, generator=generator)

    # 1. step 0: the wrapped model returns what the decoder alone returns
    model.eval()
    with torch.no_grad():
        out = model(features, text, pad)
        gap = (out.logits - bare_output(model, features, text, pad)).abs().max().item()
    if gap > 1e-5:
        raise SystemExit(f"{name}: the wrapped model differs from the bare decoder at step 0 by {gap:.3g}")

    # 2. one training step with the paper's objective
    model.train()
    criterion = RiskGuidedLoss(lambda_unc=1.0, lambda_ref=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = criterion(model(features, text, pad), target, step=0)
    optimizer.zero_grad()
    losses.total.backward()
    optimizer.step()

    # 3. what the modules add
    base = sum(p.numel() for p in model.decoder.parameters())
    added = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder."))
    print(f"{name}")
    print(f"  step 0: max |wrapped - bare| = {gap:.1e}")
    print("  one step: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.as_floats().items()))
    print(f"  decoder {base:,} parameters; RUS + UGF + UDLR add {added:,} ({100 * added / base:.1f} %)")
    return {"gap": gap, "decoder_params": base, "added_params": added, **losses.as_floats()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--c4-dims", type=int, default=256,
                        help="width of the coarsest backbone level (Swin-B: 1024; default 256 for a quick run)")
    parser.add_argument("--dim", type=int, default=64, help="internal width of the pixel decoder (CARIS: 256)")
    parser.add_argument("--text-dim", type=int, default=768, help="width of the text features (BERT-base: 768)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels, a multiple of 32")
    args = parser.parse_args(argv)
    widths = (args.c4_dims // 8, args.c4_dims // 4, args.c4_dims // 2, args.c4_dims)

    # A decoder you trained before: norm=False keeps UGF an exact identity at step 0 (the
    # paper's LayerNorm of Eq. 12 would change what the trained decoder reads). Leave it at its
    # default (True) when training the decoder together with the modules from the start.
    safe = {"fusion_kwargs": {"norm": False}}
    torch.manual_seed(0)
    results = {
        "SimpleDecoding": demo("LAVT / RMSIN-style SimpleDecoding", wrap_simple_decoding(
            args.c4_dims, args.text_dim, **safe), widths, args.text_dim, args.size),
        "PixelDecoder": demo("CARIS / Mask2Former-style PixelDecoder", wrap_pixel_decoder(
            widths, args.dim, args.text_dim, **safe), widths, args.text_dim, args.size),
    }
    return results


if __name__ == "__main__":
    main()
