"""Look-alikes of six published referring-segmentation decoders, for trying the wrapper's recipes.

Each class below reproduces the **module tree, the submodule names, the widths, the call
signature and the output** of a decoder from a public repository (named, with the file and the
commit read, in its docstring), so that a recipe that names ``relu2_2`` or ``input_convs.0``
here names the same layer in the real class. They are written for this project, not copied:
where the real class depends on a package the library does not need (the adaptive rotated
convolution of RMSIN, mmcv's deformable attention in CARIS), a stand-in with the same
parameters and the same input / output shapes takes its place, and the docstring says so.
Use your own decoder in your own code; these exist so that the recipes, their tests and the
benchmarks run anywhere.

=================  =============================================  =====================================
name               class (repository, file)                       forward
=================  =============================================  =====================================
``lavt``           ``SimpleDecoding`` (yz93/LAVT-RIS,             ``(x_c4, x_c3, x_c2, x_c1)``
                   ``lib/mask_predictor.py``)                     -> ``(B, 2, H/4, W/4)``
``fianet``         ``SimpleDecoding`` (Shaosifan/FIANet, same     as ``lavt``
                   file, the same layers as LAVT's)
``rmsin``          ``SimpleDecoding`` (Lsan2401/RMSIN, same       as ``lavt``
                   file; rotated 3x3 convolutions)
``aeroreformer``   ``SimpleDecoding`` (lironui/AeroReformer,      ``(x4, x3, x2, x1)``
                   same file; an FPN-like variant)                -> ``(B, 2, H/4, W/4)``
``cadformer``      ``TCMD`` (zxk688/CADFormer, same file)         ``(lan, x_c4, x_c3, x_c2, x_c1)``,
                                                                  ``lan`` (B, 768, L) -> ``(B, 2, ...)``
``caris``          ``VLMSDeformAttnPixelDecoder`` (lsa1997/CARIS, ``(feats, lang, lang_mask)``, ``lang``
                   ``model/msdeform_decoder.py``)                 (B, L, 768), keep-mask -> ``(B, 2, ...)``
=================  =============================================  =====================================

:func:`build_decoder` builds one by name for backbone widths ``(C/8, C/4, C/2, C)`` (Swin-B:
``(128, 256, 512, 1024)``), and :func:`call_as_published` calls it the way its own repository
does. Every two-class output has channel 0 = background, channel 1 = foreground.

Axis legend
    b: batch   c: channels   l: text tokens   n: positions of a flattened map   h, w: spatial
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from uncertainty_rrsis.models.deformable_attention import MultiScaleDeformableAttention

__all__ = [
    "LAVTSimpleDecoding",
    "RMSINSimpleDecoding",
    "AeroReformerSimpleDecoding",
    "TCMD",
    "VLMSDeformAttnPixelDecoder",
    "DECODERS",
    "build_decoder",
    "call_as_published",
]


# =============================================================================================
# The LAVT family: SimpleDecoding (LAVT, FIANet, RMSIN)
# =============================================================================================


def _interpolate_up(x: torch.Tensor, like: torch.Tensor, *, scale_by_two: bool) -> torch.Tensor:
    """Upsample ``x`` to ``like``'s size when it is smaller (bilinear, ``align_corners=True``)."""
    if x.shape[-2] >= like.shape[-2] and x.shape[-1] >= like.shape[-1]:
        return x
    if scale_by_two:  # RMSIN doubles instead of matching the size
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class _TopDownStages(nn.Module):
    """Three top-down stages, each ``cat -> conv1 -> bn1 -> relu1 -> conv2 -> bn2 -> relu2``.

    The submodules are registered under the real names: ``conv1_4, bn1_4, relu1_4, conv2_4,
    bn2_4, relu2_4`` for the stage that merges ``x_c4`` with ``x_c3`` (output at stride 16),
    ``*_3`` for the one that adds ``x_c2`` (stride 8) and ``*_2`` for ``x_c1`` (stride 4); then
    ``conv1_1``, the 1x1 classifier to two channels.
    """

    _STAGES = ("4", "3", "2")

    def __init__(self, c4_dims: int, factor: int, *, second_conv, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = hidden_dim if hidden_dim is not None else c4_dims // factor
        skips = [c4_dims // factor ** k for k in (1, 2, 3)]  # widths of x_c3, x_c2, x_c1
        inputs = [c4_dims + skips[0], hidden + skips[1], hidden + skips[2]]
        for stage, width in zip(self._STAGES, inputs):
            setattr(self, f"conv1_{stage}", nn.Conv2d(width, hidden, 3, padding=1, bias=False))
            setattr(self, f"bn1_{stage}", nn.BatchNorm2d(hidden))
            setattr(self, f"relu1_{stage}", nn.ReLU())
            setattr(self, f"conv2_{stage}", second_conv(hidden))
            setattr(self, f"bn2_{stage}", nn.BatchNorm2d(hidden))
            setattr(self, f"relu2_{stage}", nn.ReLU())
        self.conv1_1 = nn.Conv2d(hidden, 2, 1)

    def stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        for layer in ("conv1_", "bn1_", "relu1_", "conv2_", "bn2_", "relu2_"):
            x = getattr(self, layer + name)(x)
        return x


class LAVTSimpleDecoding(_TopDownStages):
    """LAVT's and FIANet's ``SimpleDecoding``: ``forward(x_c4, x_c3, x_c2, x_c1)``, no text.

    Mirrors ``SimpleDecoding`` of ``lib/mask_predictor.py`` in yz93/LAVT-RIS (commit 1da0af9)
    and in Shaosifan/FIANet (commit 89a234a; the same layers). Hidden width ``c4_dims //
    factor`` (512 with Swin-B); every upsampling is bilinear with ``align_corners=True``.
    The stride-4 mask feature is the output of ``relu2_2``; the two upper stages end in
    ``relu2_4`` (stride 16) and ``relu2_3`` (stride 8).

    Shapes: x_c4 (B, C, H/32, W/32), x_c3 (B, C/2, H/16, W/16), x_c2 (B, C/4, H/8, W/8),
    x_c1 (B, C/8, H/4, W/4) with C = ``c4_dims`` -> (B, 2, H/4, W/4).
    """

    def __init__(self, c4_dims: int, factor: int = 2) -> None:
        super().__init__(c4_dims, factor, second_conv=lambda w: nn.Conv2d(w, w, 3, padding=1, bias=False))

    def forward(self, x_c4, x_c3, x_c2, x_c1):
        x = x_c4
        for name, skip in zip(self._STAGES, (x_c3, x_c2, x_c1)):
            x = self.stage(name, torch.cat([_interpolate_up(x, skip, scale_by_two=False), skip], dim=1))
        return self.conv1_1(x)


class _LayerNormProxy(nn.Module):
    """LayerNorm over the channels of an NCHW map (submodule ``norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return rearrange(self.norm(rearrange(x, "b c h w -> b h w c")), "b h w c -> b c h w")


class _RoutingFunction(nn.Module):
    """Stand-in for ``arc.RountingFunction`` (the real spelling): per-sample kernel weights and angles.

    Same submodules and parameters as the real one: ``dwc`` (depth-wise 3x3), ``norm``,
    ``relu``, ``avg_pool``, ``dropout1``, ``fc_alpha``, ``dropout2``, ``fc_theta``, ``act_func``.
    """

    def __init__(self, in_channels: int, kernel_number: int, dropout_rate: float = 0.2) -> None:
        super().__init__()
        self.kernel_number = kernel_number
        self.dwc = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.norm = _LayerNormProxy(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout1 = nn.Dropout(dropout_rate)
        self.fc_alpha = nn.Linear(in_channels, kernel_number, bias=True)
        self.dropout2 = nn.Dropout(dropout_rate)
        self.fc_theta = nn.Linear(in_channels, kernel_number, bias=False)
        self.act_func = nn.Softsign()

    def forward(self, x):
        pooled = self.avg_pool(self.relu(self.norm(self.dwc(x)))).flatten(1)  # (b, c)
        alphas = torch.sigmoid(self.fc_alpha(self.dropout1(pooled)))  # (b, n)
        angles = self.act_func(self.fc_theta(self.dropout2(pooled))) * (40.0 / 180.0 * math.pi)
        return alphas, angles


class _RotatedConvStandIn(nn.Module):
    """Stand-in for ``arc.AdaptiveRotatedConv2d`` (RMSIN, AeroReformer, CADFormer).

    The same parameters (``weight`` of shape (kernel_number, C_out, C_in, 3, 3) and the routing
    function as ``rounting_func``) and the same per-sample convolution. The real class rotates
    each kernel by its predicted angle (a 9 x 9 interpolation of the taps); the stand-in blends
    each kernel with its quarter turn by the angle's cosine and sine, which keeps the shapes,
    the names and a gradient for every parameter.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_number: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_number = in_channels, out_channels, kernel_number
        self.rounting_func = _RoutingFunction(in_channels, kernel_number)
        self.weight = nn.Parameter(torch.empty(kernel_number, out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        alphas, angles = self.rounting_func(x)  # (b, n) each
        turned = torch.rot90(self.weight, 1, dims=(-2, -1))
        weight = (torch.einsum("bn,noikj->boikj", alphas * angles.cos(), self.weight)
                  + torch.einsum("bn,noikj->boikj", alphas * angles.sin(), turned))  # one kernel per sample
        b = x.shape[0]
        out = F.conv2d(rearrange(x, "b c h w -> 1 (b c) h w"), rearrange(weight, "b o i k j -> (b o) i k j"),
                       padding=1, groups=b)
        return rearrange(out, "1 (b o) h w -> b o h w", b=b)


class RMSINSimpleDecoding(_TopDownStages):
    """RMSIN's ``SimpleDecoding``: LAVT's layers and names, rotated 3x3 convolutions in ``conv2_*``.

    Mirrors ``SimpleDecoding`` of ``lib/mask_predictor.py`` in Lsan2401/RMSIN (commit b4a9b27):
    ``conv2_4``, ``conv2_3`` and ``conv2_2`` are ``AdaptiveRotatedConv2d`` (kernel_number 1)
    from the repository's ``arc`` package (here a stand-in with the same parameters), and each
    upsampling doubles the size (``scale_factor=2``, ``align_corners=True``), so the levels must
    be exactly 2x apart (true for 480 x 480 inputs).

    Shapes: as :class:`LAVTSimpleDecoding`.
    """

    def __init__(self, c4_dims: int, factor: int = 2) -> None:
        super().__init__(c4_dims, factor, second_conv=lambda w: _RotatedConvStandIn(w, w, kernel_number=1))

    def forward(self, x_c4, x_c3, x_c2, x_c1):
        x = x_c4
        for name, skip in zip(self._STAGES, (x_c3, x_c2, x_c1)):
            x = self.stage(name, torch.cat([_interpolate_up(x, skip, scale_by_two=True), skip], dim=1))
        return self.conv1_1(x)


# =============================================================================================
# AeroReformer: an FPN-like SimpleDecoding
# =============================================================================================


class _L2Linear(nn.Module):
    """Stand-in for AeroReformer's linear attention blocks: ``x + gamma * attention(x)``, gamma from 0.

    ``SpatialAttention(in_places)`` has ``query_conv``, ``key_conv`` (to in_places // 8) and
    ``value_conv``; ``ChannelAttention()`` has only ``gamma``. Both return ``x`` at
    initialisation (``gamma = 0``), as the real ones do.
    """

    def __init__(self, in_places: int | None = None) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        if in_places is not None:  # SpatialAttention
            self.query_conv = nn.Conv2d(in_places, in_places // 8, 1)
            self.key_conv = nn.Conv2d(in_places, in_places // 8, 1)
            self.value_conv = nn.Conv2d(in_places, in_places, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        if hasattr(self, "query_conv"):
            q = F.normalize(self.query_conv(x).flatten(2), dim=1)  # (b, c', n)
            k = F.normalize(self.key_conv(x).flatten(2), dim=1)
            v = self.value_conv(x).flatten(2)
            attended = torch.einsum("bkn,bkm,bcm->bcn", q, k, v) / (h * w)
        else:
            flat = F.normalize(x.flatten(2), dim=2)  # (b, c, n)
            attended = torch.einsum("bcn,bdn,bdm->bcm", flat, flat, x.flatten(2)) / c
        return (x + self.gamma * attended.reshape(b, c, h, w)).contiguous()


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AeroReformerSimpleDecoding(nn.Module):
    """AeroReformer's ``SimpleDecoding``: lateral 1x1 blocks, transposed-conv upsampling, attention.

    Mirrors ``SimpleDecoding`` of ``lib/mask_predictor.py`` in lironui/AeroReformer (commit
    76785b0): ``lat1``-``lat4`` (1x1 conv-BN-ReLU per level), ``up4``/``up3``/``up2``
    (``ConvTranspose2d`` x2), ``reduce4``/``reduce3``/``reduce2`` (1x1 fusion blocks),
    ``ca3``/``ca2`` (channel attention) and ``pa1`` (spatial attention; stand-ins here),
    ``smooth3`` (stride 16, C/2 wide), ``smooth2`` (stride 8, C/4), ``smooth1`` (stride 4, C/8:
    the mask feature), each a rotated 3x3 conv-BN-ReLU, and ``final_conv`` to two classes.

    Shapes: x4 (B, C4, H/32, W/32), x3 (B, C3, ...), x2 (B, C2, ...), x1 (B, C1, H/4, W/4) with
    ``encoder_channels = (C1, C2, C3, C4)`` -> (B, 2, H/4, W/4).
    """

    def __init__(self, c4_dims: int, encoder_channels: Sequence[int] = (128, 256, 512, 1024)) -> None:
        super().__init__()
        c1, c2, c3, c4 = encoder_channels
        for i, width in enumerate((c1, c2, c3, c4), start=1):
            setattr(self, f"lat{i}", _conv_bn_relu(width, width))
        for i, width in ((4, c4), (3, c3), (2, c2)):
            setattr(self, f"up{i}", nn.Sequential(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)))
        for i, width in ((1, c1), (2, c2), (3, c3)):
            setattr(self, f"smooth{i}", nn.Sequential(
                _RotatedConvStandIn(width, width, kernel_number=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
        for i, (wide, narrow) in ((4, (c4, c3)), (3, (c3, c2)), (2, (c2, c1))):
            setattr(self, f"reduce{i}", _conv_bn_relu(wide + narrow, narrow))
        self.ca2 = _L2Linear()
        self.ca3 = _L2Linear()
        self.pa1 = _L2Linear(in_places=c2 + c1)
        self.final_conv = nn.Conv2d(c1, 2, kernel_size=1)

    def forward(self, x4, x3, x2, x1):
        x = self.up4(self.lat4(x4))
        x = self.smooth3(self.reduce4(self.ca3(torch.cat([self.lat3(x3), x], dim=1))))  # stride 16
        x = self.smooth2(self.reduce3(self.ca2(torch.cat([self.lat2(x2), self.up3(x)], dim=1))))  # stride 8
        x = self.smooth1(self.reduce2(self.pa1(torch.cat([self.lat1(x1), self.up2(x)], dim=1))))  # stride 4
        return self.final_conv(x)


# =============================================================================================
# CADFormer: TCMD, text-conditioned top-down stages
# =============================================================================================


class _TransformerFusion(nn.Module):
    """CADFormer's ``Transformer_Fusion``: the map's positions attend to the words (one decoder layer).

    Submodules as in the real class: ``decoder_layer`` (an ``nn.TransformerDecoderLayer``, built
    but not called: ``nn.TransformerDecoder`` runs deep copies of it, so its own parameters get
    no gradient) and ``transformer_model``. Sequence-first, ``lan`` channel-first (B, D, L).
    """

    def __init__(self, dim: int = 768, nhead: int = 8, num_layers: int = 1) -> None:
        super().__init__()
        self.decoder_layer = nn.TransformerDecoderLayer(d_model=dim, nhead=nhead)
        self.transformer_model = nn.TransformerDecoder(self.decoder_layer, num_layers=num_layers)

    def forward(self, v, lan):
        h, w = v.shape[-2:]
        tokens = self.transformer_model(rearrange(v, "b c h w -> (h w) b c"), rearrange(lan, "b c l -> l b c"))
        return rearrange(tokens, "(h w) b c -> b c h w", h=h, w=w)


class TCMD(_TopDownStages):
    """CADFormer's ``TCMD``: LAVT-like stages at the text width, each followed by word attention.

    Mirrors ``TCMD`` of ``lib/mask_predictor.py`` in zxk688/CADFormer (commit 0df0d1f):
    ``forward(lan, x_c4, x_c3, x_c2, x_c1)`` with ``lan`` the words **channel-first**
    (B, 768, L) and **no padding mask**; the hidden width is the text width (768, fixed in the
    real class; ``lan_size`` here so that tests can shrink it); ``conv2_*`` are rotated 3x3
    convolutions (stand-ins), ``transformer_fusion1`` follows ``relu2_4`` and
    ``transformer_fusion2`` follows ``relu2_3``; ``relu2_2`` gives the stride-4 mask feature;
    ``adpool`` is built and unused, as in the real class.

    Shapes: lan (B, lan_size, L); levels as :class:`LAVTSimpleDecoding` -> (B, 2, H/4, W/4).
    """

    def __init__(self, c4_dims: int, factor: int = 2, *, lan_size: int = 768, nhead: int = 8) -> None:
        super().__init__(c4_dims, factor, hidden_dim=lan_size,
                         second_conv=lambda w: _RotatedConvStandIn(w, w, kernel_number=1))
        self.adpool = nn.AdaptiveAvgPool2d((1, 1))
        self.transformer_fusion1 = _TransformerFusion(lan_size, nhead)
        self.transformer_fusion2 = _TransformerFusion(lan_size, nhead)

    def forward(self, lan, x_c4, x_c3, x_c2, x_c1):
        x = x_c4
        fusions = (self.transformer_fusion1, self.transformer_fusion2, None)
        for name, skip, fusion in zip(self._STAGES, (x_c3, x_c2, x_c1), fusions):
            x = self.stage(name, torch.cat([_interpolate_up(x, skip, scale_by_two=False), skip], dim=1))
            if fusion is not None:
                x = fusion(x, lan)
        return self.conv1_1(x)


# =============================================================================================
# CARIS: VLMSDeformAttnPixelDecoder
# =============================================================================================


class _ConvModule(nn.Module):
    """mmcv's ``ConvModule`` as CARIS configures it: ``conv``, then ``gn`` (GroupNorm 32), then
    ``activate`` when an activation is asked for."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, *, act: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)
        self.gn = nn.GroupNorm(min(32, cout), cout)
        if act:
            self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.gn(self.conv(x))
        return self.activate(x) if hasattr(self, "activate") else x


class _MultiHeadAttention(nn.Module):
    """CARIS's ``MultiHeadAttention``: ``q_proj``, ``k_proj``, ``v_proj`` to ``embed_dim``, ``out_proj``
    back to ``q_dim``; ``attention_mask`` (B, S) with 1 = attend, 0 = ignore."""

    def __init__(self, q_dim: int, k_dim: int, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(q_dim, embed_dim)
        self.k_proj = nn.Linear(k_dim, embed_dim)
        self.v_proj = nn.Linear(k_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, q_dim)

    def forward(self, q, k, v, attention_mask=None):
        split = lambda t: rearrange(t, "b n (g e) -> b g n e", g=self.num_heads)  # noqa: E731
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)),
                                             attn_mask=keep)
        return self.out_proj(rearrange(out, "b g n e -> b n (g e)")), None


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _VLMSDeformAttnLayer(nn.Module):
    """CARIS's ``VLMSDeformAttnLayer``: vision-to-language, language self, language-to-vision
    attention, then deformable self-attention over the levels (the library's pure-PyTorch one
    stands in for mmcv's ``MultiScaleDeformableAttention``), with the real submodule names."""

    def __init__(self, dim: int, heads: int, num_levels: int, num_points: int, mlp_expand: int = 4) -> None:
        super().__init__()
        self.vis_self_attn = MultiScaleDeformableAttention(dim, num_heads=heads, num_levels=num_levels,
                                                           num_points=num_points)
        self.v2l_cross_attn = _MultiHeadAttention(dim, dim, dim * 4, heads)
        self.l2v_cross_attn = _MultiHeadAttention(dim, dim, dim * 4, heads)
        self.lang_self_attn = _MultiHeadAttention(dim, dim, dim * 4, heads)
        self.vis_mlp = _FeedForward(dim, dim * mlp_expand)
        self.lang_mlp = _FeedForward(dim, dim * mlp_expand)
        self.gamma_v2l = nn.Parameter(torch.ones(1, 1, dim))
        self.gamma_l2v = nn.Parameter(torch.ones(1, 1, dim))
        for name in ("v_norm1", "v_norm2", "v_norm3", "l_norm1", "l_norm2", "l_norm3"):
            setattr(self, name, nn.LayerNorm(dim))

    def forward(self, vis, lang, prompts, lang_mask, vis_pos, reference_points, spatial_shapes):
        words = torch.cat([lang, prompts], dim=1)
        words = self.l_norm1(words + self.gamma_v2l * self.v2l_cross_attn(words, vis + vis_pos, vis)[0])
        words = self.l_norm2(words + self.lang_self_attn(words, words, words, lang_mask)[0])
        words = self.l_norm3(words + self.lang_mlp(words))
        vis = self.v_norm2(vis + self.gamma_l2v * self.l2v_cross_attn(vis + vis_pos, words, words, lang_mask)[0])
        vis = self.v_norm1(vis + self.vis_self_attn(vis + vis_pos, reference_points, vis, spatial_shapes))
        vis = self.v_norm3(vis + self.vis_mlp(vis))
        return vis, words[:, : lang.shape[1]], words[:, lang.shape[1]:]


def _sine_position(h: int, w: int, dim: int, device) -> torch.Tensor:
    """Normalised sine / cosine position code of an (h, w) grid, (dim, h, w) (no parameters)."""
    y = (torch.arange(h, device=device, dtype=torch.float32) + 1) / h * 2 * math.pi
    x = (torch.arange(w, device=device, dtype=torch.float32) + 1) / w * 2 * math.pi
    freq = 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4))
    ey, ex = y[:, None] / freq, x[:, None] / freq  # (h, dim/4), (w, dim/4)
    code_y = torch.cat([ey.sin(), ey.cos()], dim=1)[:, None, :].expand(h, w, dim // 2)
    code_x = torch.cat([ex.sin(), ex.cos()], dim=1)[None, :, :].expand(h, w, dim // 2)
    return rearrange(torch.cat([code_y, code_x], dim=-1), "h w c -> c h w")


class VLMSDeformAttnPixelDecoder(nn.Module):
    """CARIS's pixel decoder: deformable vision-language encoder on three levels, FPN to stride 4.

    Mirrors ``VLMSDeformAttnPixelDecoder`` of ``model/msdeform_decoder.py`` in lsa1997/CARIS
    (commit 4b24546), which imports mmcv 1.x (``ConvModule``, ``MultiScaleDeformableAttention``)
    and mmdet 2.x (``MlvlPointGenerator``, ``SinePositionalEncoding``): ``input_convs`` (the
    three coarsest levels, **coarsest first**, each a 1x1 ``ConvModule`` with GroupNorm to
    ``feat_channels``), ``encoder`` (``num_enc_layers`` layers), ``level_encoding``,
    ``lang_in_linear`` / ``lang_in_norm`` (words to ``feat_channels``), ``vis_prompts``
    (learned background prompts), ``lateral_convs`` / ``output_convs`` (the stride-4 level),
    ``mask_feature`` (three 1x1 convs: the mask feature, ``out_channels`` wide) and
    ``lang_embed`` (its parameter-free dropout layers, rate 0 in CARIS, are left out). The
    output has two channels: channel 0 is the prompts' mean (background), channel 1 the first
    word's embedding ([CLS], foreground), each dotted with the mask feature.

    Shapes: feats list of (B, in_channels[i], H_i, W_i), finest first; lang (B, L,
    lang_in_channels); lang_mask (B, L), 1 = word, 0 = padding -> (B, 2, H_0, W_0).
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (256, 512, 1024, 2048),
        lang_in_channels: int = 768,
        strides: Sequence[int] = (4, 8, 16, 32),
        feat_channels: int = 256,
        out_channels: int = 256,
        num_enc_layers: int = 6,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int = 4,
        mlp_expand: int = 4,
        with_prompts: bool = True,
        num_prompts: int = 10,
    ) -> None:
        super().__init__()
        self.strides = list(strides)
        self.num_input_levels = len(in_channels)
        self.num_encoder_levels = num_levels
        self.num_prompts = num_prompts
        coarsest_first = list(reversed(in_channels))[:num_levels]
        self.input_convs = nn.ModuleList(_ConvModule(c, feat_channels) for c in coarsest_first)
        self.num_enc_layers = num_enc_layers
        self.encoder = nn.ModuleList(
            _VLMSDeformAttnLayer(feat_channels, num_heads, num_levels, num_points, mlp_expand)
            for _ in range(num_enc_layers)
        )
        self.level_encoding = nn.Embedding(num_levels, feat_channels)
        self.lang_in_linear = nn.Linear(lang_in_channels, feat_channels)
        self.lang_in_norm = nn.LayerNorm(feat_channels)
        self.with_prompts = with_prompts
        self.vis_prompts = nn.Embedding(num_prompts, feat_channels)
        rest = list(reversed(in_channels))[num_levels:]  # the finer levels, coarsest first
        self.lateral_convs = nn.ModuleList(_ConvModule(c, feat_channels, bias=False) for c in rest)
        self.output_convs = nn.ModuleList(
            _ConvModule(feat_channels, feat_channels, 3, act=True, bias=False) for _ in rest)
        self.mask_feature = nn.Sequential(
            nn.Conv2d(feat_channels, feat_channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels, feat_channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels, out_channels, 1),
        )
        self.lang_embed = nn.Sequential(
            nn.Linear(feat_channels, feat_channels), nn.ReLU(inplace=True),
            nn.Linear(feat_channels, feat_channels), nn.ReLU(inplace=True),
            nn.Linear(feat_channels, out_channels),
        )

    def forward(self, feats, lang, lang_mask):
        b = feats[0].shape[0]
        tokens, positions, shapes = [], [], []
        for i, conv in enumerate(self.input_convs):  # coarsest level first
            level = feats[self.num_input_levels - 1 - i]
            projected = conv(level)
            h, w = projected.shape[-2:]
            tokens.append(rearrange(projected, "b c h w -> b (h w) c"))
            code = _sine_position(h, w, projected.shape[1], level.device) + self.level_encoding.weight[i][:, None, None]
            positions.append(rearrange(code, "c h w -> 1 (h w) c"))
            shapes.append((int(h), int(w)))
        reference = torch.cat([
            torch.stack(torch.meshgrid((torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h, indexing="xy"), -1)
            .reshape(-1, 2) for h, w in shapes]).to(feats[0])[None]  # (1, n, 2), normalised (x, y)
        vis, pos = torch.cat(tokens, dim=1), torch.cat(positions, dim=1)
        prompts = self.vis_prompts.weight.repeat(b, 1, 1)  # (b, prompts, c)
        keep = torch.cat([lang_mask, lang_mask.new_ones(b, self.num_prompts)], dim=1)
        words = self.lang_in_norm(self.lang_in_linear(lang))
        for layer in self.encoder:
            vis, words, prompts = layer(vis, words, prompts, keep, pos, reference, shapes)
        outs = [rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
                for t, (h, w) in zip(vis.split([h * w for h, w in shapes], dim=1), shapes)]
        for i, (lateral, output) in enumerate(zip(self.lateral_convs, self.output_convs)):
            cur = lateral(feats[self.num_input_levels - self.num_encoder_levels - 1 - i])
            outs.append(output(cur + F.interpolate(outs[-1], size=cur.shape[-2:], mode="bilinear",
                                                   align_corners=False)))
        mask_feature = self.mask_feature(outs[-1])
        classes = self.lang_embed(torch.cat([prompts.mean(dim=1, keepdim=True), words[:, :1]], dim=1))  # (b, 2, c)
        return torch.einsum("bqc,bchw->bqhw", classes, mask_feature)


# =============================================================================================
# By name
# =============================================================================================

DECODERS = ("lavt", "fianet", "rmsin", "aeroreformer", "cadformer", "caris")


def build_decoder(name: str, widths: Sequence[int], text_dim: int = 768, *, small: bool = False) -> nn.Module:
    """The look-alike of ``name`` for backbone widths ``widths`` (finest first, each twice the previous).

    ``small=True`` shrinks what does not depend on the widths (CARIS: one encoder layer instead
    of six, 4 heads; CADFormer: 4 heads) for quick tests.
    """
    c1, c2, c3, c4 = widths
    if name in ("lavt", "fianet"):
        return LAVTSimpleDecoding(c4)
    if name == "rmsin":
        return RMSINSimpleDecoding(c4)
    if name == "aeroreformer":
        return AeroReformerSimpleDecoding(c4, encoder_channels=tuple(widths))
    if name == "cadformer":
        return TCMD(c4, lan_size=text_dim, nhead=4 if small else 8)
    if name == "caris":
        return VLMSDeformAttnPixelDecoder(
            in_channels=tuple(widths), lang_in_channels=text_dim, feat_channels=16 if small else 256,
            out_channels=16 if small else 256, num_enc_layers=1 if small else 6, num_heads=4 if small else 8,
            num_prompts=5,  # CARIS builds its pixel decoder with 5 visual prompts
        )
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(DECODERS)}")


def call_as_published(name: str, decoder: nn.Module, features, text, text_padding_mask) -> torch.Tensor:
    """Call ``decoder`` the way its own repository calls it: the bare decoder's raw output.

    ``features`` finest first, ``text`` (B, L, D), ``text_padding_mask`` (B, L) bool with True =
    padding (the library's convention), converted here to what each decoder reads.
    """
    if name in ("lavt", "fianet", "rmsin", "aeroreformer"):
        return decoder(*reversed(list(features)))
    if name == "cadformer":
        return decoder(rearrange(text, "b l d -> b d l"), *reversed(list(features)))
    if name == "caris":
        return decoder(list(features), text, (~text_padding_mask).long())
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(DECODERS)}")
