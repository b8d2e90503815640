"""Tiny decoders for tests that wrap a decoder with :class:`RiskGuidedDecoder`.

Designed for the wrapper's default contract, ``decoder(features, text, text_padding_mask)`` with
``features`` a list of ``(B, dim, H_i, W_i)`` maps, finest first, one foreground logit map out:

- :class:`ToyFPNDecoder` returns only the logits; its submodule ``fpn.out`` outputs the
  high-resolution mask feature ``F`` (so the wrapper captures it with
  ``mask_feature_from="fpn.out"``).
- :class:`ToyPairDecoder` returns ``(logits, mask_feature)``.

Shaped like the field's decoders, which the wrapper must take as they are:

- :class:`LAVTShapedDecoder`: ``forward(x_c4, x_c3, x_c2, x_c1)``, four positional maps, coarsest
  first, at widths C, C/2, C/4, C/8; no text; BatchNorm; two-class logits at the finest level.
  ``F`` is the output of ``stage1``.
- :class:`CARISShapedDecoder`: ``forward(features, text, attention_mask)`` with a list of
  multi-width maps (finest first), its own 1x1 ``input_convs`` (coarsest level first) to width
  ``dim``, text of width ``text_dim`` and a Hugging Face keep-mask (1 = token); foreground logits
  only. ``F`` is the output of ``mask_features``.

Axis legend
    b: batch   c: width (``dim``)   l: text tokens   h, w: spatial
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ToyFPN", "ToyFPNDecoder", "ToyPairDecoder", "LAVTShapedDecoder", "CARISShapedDecoder",
    "TOY_DIM", "toy_wrapper", "toy_batch", "wrap_field_decoder", "field_inputs",
]


class ToyFPN(nn.Module):
    """Top-down FPN: 1x1 laterals, nearest upsample-add, then ``out`` (3x3 conv) on the finest level."""

    def __init__(self, dim: int, num_levels: int = 4) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(dim, dim, 1) for _ in range(num_levels))
        self.out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lat = self.lateral[i](features[i])
            x = lat + F.interpolate(x, size=lat.shape[-2:], mode="nearest")
        return self.out(x)


class ToyFPNDecoder(nn.Module):
    """Returns only ``coarse_logits`` (B, 1, H0, W0); ``fpn.out`` gives the mask feature (B, dim, H0, W0)."""

    def __init__(self, dim: int, num_levels: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.fpn = ToyFPN(dim, num_levels)
        self.text_proj = nn.Linear(dim, dim)
        self.head = nn.Conv2d(dim, 1, 1)

    def decode(self, features, text, text_padding_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.fpn(list(features))
        if text_padding_mask is None:
            keep = torch.ones(text.shape[:2], dtype=text.dtype, device=text.device)
        else:
            keep = (~text_padding_mask).to(text.dtype)
        pooled = (text * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)  # (b, c)
        sentence = self.text_proj(pooled)[:, :, None, None]
        logits = self.head(F.relu(feature) * torch.sigmoid(sentence))
        return logits, feature

    def forward(self, features, text, text_padding_mask=None) -> torch.Tensor:
        return self.decode(features, text, text_padding_mask)[0]


class ToyPairDecoder(ToyFPNDecoder):
    """Same network, returns ``(coarse_logits, mask_feature)``."""

    def forward(self, features, text, text_padding_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(features, text, text_padding_mask)


class _Stage(nn.Sequential):
    """conv3x3 (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class LAVTShapedDecoder(nn.Module):
    """Positional, multi-width, text-free, two-class; see the module docstring.

    Shapes: x_c4 (B, C, H/32, W/32), x_c3 (B, C/2, ...), x_c2 (B, C/4, ...), x_c1 (B, C/8, H/4, W/4)
    -> (B, 2, H/4, W/4).
    """

    def __init__(self, c4_dims: int) -> None:
        super().__init__()
        hidden = c4_dims // 2
        self.stage3 = _Stage(c4_dims + c4_dims // 2, hidden)
        self.stage2 = _Stage(hidden + c4_dims // 4, hidden)
        self.stage1 = _Stage(hidden + c4_dims // 8, hidden)
        self.classifier = nn.Conv2d(hidden, 2, 1)

    def forward(self, x_c4, x_c3, x_c2, x_c1) -> torch.Tensor:
        x = x_c4
        for stage, skip in ((self.stage3, x_c3), (self.stage2, x_c2), (self.stage1, x_c1)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = stage(torch.cat([x, skip], dim=1))
        return self.classifier(x)


class CARISShapedDecoder(nn.Module):
    """List input, own input projections, keep-mask text, logits only; see the module docstring.

    Shapes: features list of (B, in_dims[i], H_i, W_i) finest first; text (B, L, text_dim);
    attention_mask (B, L) long, 1 = token -> (B, 1, H_0, W_0).
    """

    def __init__(self, in_dims: tuple[int, ...], dim: int, text_dim: int) -> None:
        super().__init__()
        self.dim = dim
        # the three coarsest levels, coarsest first (Mask2Former's order)
        self.input_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(4, dim)) for c in reversed(in_dims[1:])
        )
        self.lateral = nn.Conv2d(in_dims[0], dim, 1)
        self.text_proj = nn.Linear(text_dim, dim)
        self.mask_features = nn.Conv2d(dim, dim, 1)

    def forward(self, features, text, attention_mask) -> torch.Tensor:
        coarsest_first = [conv(f) for conv, f in zip(self.input_convs, reversed(features[1:]))]
        x = coarsest_first[0]
        for level in [*coarsest_first[1:], self.lateral(features[0])]:
            x = level + F.interpolate(x, size=level.shape[-2:], mode="nearest")
        feature = self.mask_features(x)  # F
        keep = attention_mask.to(text.dtype)[..., None]
        sentence = self.text_proj((text * keep).sum(1) / keep.sum(1).clamp_min(1.0))
        return torch.einsum("bchw,bc->bhw", feature, sentence)[:, None] / self.dim**0.5


# --------------------------------------------------------------------------------------------
# the toy decoders wrapped with the default contract
# --------------------------------------------------------------------------------------------

TOY_DIM = 16


def toy_wrapper(kind: str, **kwargs):
    """``RiskGuidedDecoder`` (width 16, 2 heads, seed 0) around a toy decoder: ``"hook"`` wraps
    :class:`ToyFPNDecoder` with ``F`` from ``fpn.out``, ``"pair"`` wraps :class:`ToyPairDecoder`."""
    from uncertainty_rrsis import RiskGuidedDecoder

    torch.manual_seed(0)
    if kind == "hook":
        return RiskGuidedDecoder(ToyFPNDecoder(TOY_DIM), TOY_DIM, num_heads=2, mask_feature_from="fpn.out", **kwargs)
    if kind == "pair":
        return RiskGuidedDecoder(ToyPairDecoder(TOY_DIM), TOY_DIM, num_heads=2, **kwargs)
    raise ValueError(f"kind must be 'hook' or 'pair'; got {kind!r}")


def toy_batch(seed: int = 0, *, size: int = 64, batch: int = 2, length: int = 6):
    """``(features, text, text_padding_mask, target)`` for :func:`toy_wrapper`: features at strides
    4 / 8 / 16 / 32 of a ``size`` image (finest first), random padding in the second half of the text."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, TOY_DIM, size // s, size // s, generator=g) for s in (4, 8, 16, 32)]
    text = torch.randn(batch, length, TOY_DIM, generator=g)
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[:, length // 2 :] = torch.rand(batch, length - length // 2, generator=g) > 0.5
    target = torch.rand(batch, size, size, generator=g) > 0.7
    return features, text, pad, target


# --------------------------------------------------------------------------------------------
# the two field-shaped decoders wrapped as a user of the field would wrap them
# --------------------------------------------------------------------------------------------

FIELD_WIDTHS = (8, 16, 32, 64)  # finest first, as Swin-B's (128, 256, 512, 1024) / 16
FIELD_TEXT_DIM, INNER, HEADS, B, L, SIZE = 24, 16, 4, 2, 6, 64
FUSE_AT = ("input_convs.0", "input_convs.1", "input_convs.2")


def wrap_field_decoder(kind: str, **kwargs):
    """``"lavt"``: per-level widths, positional call, two-class unpack, UGF on the levels, F by hook.
    ``"caris"``: keep-mask call, UGF on the decoder's ``input_convs`` (``fuse_at``), F by hook."""
    from uncertainty_rrsis import RiskGuidedDecoder
    from uncertainty_rrsis.adapters import call_coarsest_first, call_with_keep_mask, foreground_logit

    torch.manual_seed(0)
    common = dict(text_dim=FIELD_TEXT_DIM, num_heads=HEADS, refine_hidden_dim=8)
    if kind == "lavt":
        decoder = LAVTShapedDecoder(FIELD_WIDTHS[-1])
        options = dict(call=call_coarsest_first, unpack=foreground_logit, mask_feature_from="stage1",
                       mask_feature_dim=FIELD_WIDTHS[-1] // 2)
    elif kind == "caris":
        decoder = CARISShapedDecoder(FIELD_WIDTHS, INNER, FIELD_TEXT_DIM)
        options = dict(call=call_with_keep_mask, fuse_at=FUSE_AT, fusion_dim=INNER, mask_feature_from="mask_features")
    else:
        raise ValueError(f"kind must be 'lavt' or 'caris'; got {kind!r}")
    return RiskGuidedDecoder(decoder, FIELD_WIDTHS, **(common | options | kwargs))


def field_inputs(seed: int = 0):
    """``(features, text, text_padding_mask, target)`` for :func:`wrap_field_decoder`, a 64 px image."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(B, c, SIZE // s, SIZE // s, generator=g) for c, s in zip(FIELD_WIDTHS, (4, 8, 16, 32))]
    text = torch.randn(B, L, FIELD_TEXT_DIM, generator=g)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[0, 4:] = True
    target = torch.rand(B, SIZE, SIZE, generator=g) > 0.7
    return features, text, pad, target
