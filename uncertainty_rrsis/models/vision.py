"""Vision encoder of the reference model: any timm backbone, each level projected to C channels.

:class:`VisionEncoder` wraps ``timm.create_model(name, features_only=True, ...)``; the widths and
strides of its levels come from timm's ``feature_info`` (ConvNeXt-B: 128/256/512/1024 channels
at strides 4/8/16/32). Each level goes through a 1x1 convolution to ``dim`` channels and a
GroupNorm. A local weights file loads through :func:`load_foreign_checkpoint`, which reads timm's
key names and the other layouts ConvNeXt weights come in (SMLFR's remote-sensing pre-training,
torchvision's and the original Facebook ConvNeXt, a detection backbone's).

Axis legend
    b: batch   c: channels   h, w: spatial rows / columns
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import timm
import torch
from einops import rearrange
from torch import nn

from .._contracts import check_channels, check_rank, checks_enabled
from ._checkpoint import LoadReport, load_state_file, strip_prefixes

if TYPE_CHECKING:
    from timm.models import FeatureInfo

    from .config import VisionConfig

__all__ = ["VisionEncoder", "load_foreign_checkpoint", "group_norm_groups", "FOREIGN_PREFIXES", "check_vision_weights"]

#: Values of ``weights`` that ask for random initialisation explicitly.
RANDOM_WEIGHTS: tuple[str, ...] = ("none", "random")


def group_norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest number of groups ``<= max_groups`` that divides ``channels``."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class VisionEncoder(nn.Module):
    """A timm backbone returning ``len(out_indices)`` levels projected to ``dim`` channels.

    Args:
        name: timm model name (``"convnext_base"``, ``"convnext_atto"``, ``"resnet50"``, ...).
        dim: output channels C of every level.
        out_indices: which backbone levels to return (finest first).
        weights: ``None`` (random init), ``"none"`` / ``"random"`` (random init, asked for
            explicitly), a local weights file (``.safetensors`` or ``torch.save``; timm's key names
            or any layout :func:`load_foreign_checkpoint` recognises: SMLFR's pre-training
            checkpoint, torchvision's or Facebook's ConvNeXt), every backbone weight must be found
            in it; or ``"hub"`` (timm's default weights, downloaded -- needs network access).
        model_kwargs: extra keyword arguments of ``timm.create_model``.
        norm_groups: maximum GroupNorm groups of the projections.

    Attributes:
        backbone: the timm ``features_only`` model.
        widths: backbone channels of each returned level (from ``feature_info``).
        strides: reduction of each returned level (from ``feature_info``).
        dim: output channels.
        proj: one ``Sequential(Conv2d 1x1, GroupNorm)`` per level.

    Shapes:
        images: (B, 3, H, W) -> list of (B, dim, H / s, W / s) for s in ``strides`` (floor
        division; the reference model pads H, W to a multiple of 32 first).
    """

    def __init__(
        self,
        name: str = "convnext_base",
        dim: int = 256,
        *,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        weights: str | Path | None = None,
        model_kwargs: Mapping[str, object] | None = None,
        norm_groups: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        local: Path | None = None
        if weights is not None and str(weights).lower() not in RANDOM_WEIGHTS and str(weights) != "hub":
            local = Path(weights)
            if not local.is_file():
                raise FileNotFoundError(
                    f"VisionEncoder: weights file {str(weights)!r} does not exist. Pass a local .pth/.safetensors "
                    "file (timm, SMLFR, torchvision or Facebook ConvNeXt layout), 'hub' to download timm's weights, "
                    "or 'none' for random init."
                )
        self.backbone = timm.create_model(
            name, features_only=True, out_indices=tuple(out_indices), pretrained=str(weights) == "hub", **kwargs
        )
        self.name = name
        if local is not None:
            self._load_weights(local, kwargs)
        info = cast("FeatureInfo", self.backbone.feature_info)  # set by features_only=True
        self.dim = int(dim)
        self.widths: tuple[int, ...] = tuple(int(c) for c in info.channels())
        self.strides: tuple[int, ...] = tuple(int(r) for r in info.reduction())
        self._channels_last_output = str(getattr(self.backbone, "output_fmt", "NCHW")) == "NHWC"
        groups = group_norm_groups(self.dim, norm_groups)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, self.dim, kernel_size=1), nn.GroupNorm(groups, self.dim))
            for width in self.widths
        )
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _load_weights(self, path: Path, kwargs: Mapping[str, Any]) -> None:
        """Load a local file into the backbone; refuse one that leaves a backbone weight unset or of another shape."""
        try:
            report = load_foreign_checkpoint(self.backbone, path, layout="auto")
        except ValueError as err:  # no key matches at all
            raise ValueError(f"VisionEncoder: the weights file {str(path)!r} does not fit the timm model "
                             f"{self.name!r} (model_kwargs={dict(kwargs)}): {err}") from err
        if report.missing or report.mismatched:
            raise ValueError(
                f"VisionEncoder: the weights file {str(path)!r} does not fit the timm model {self.name!r} "
                f"(model_kwargs={dict(kwargs)}; {len(report.loaded)} tensors matched). Expected weights of the same "
                f"architecture in timm naming or a layout load_foreign_checkpoint recognises.\n{report.summary()}"
            )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) -> list of (B, dim, H_s, W_s), finest first."""
        if checks_enabled(self):
            check_rank(type(self).__name__, "images", images, "(B, 3, H, W)")
            check_channels(type(self).__name__, "images", images, 3, dim=1, layout="(B, 3, H, W)",
                           fix="Pass RGB images in NCHW layout.")
        feats = self.backbone(images)
        if self._channels_last_output:
            feats = [rearrange(f, "b h w c -> b c h w") for f in feats]
        return [proj(f) for proj, f in zip(self.proj, feats)]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, widths={self.widths}, strides={self.strides}"


# --------------------------------------------------------------------------------------------
# Foreign checkpoints
# --------------------------------------------------------------------------------------------

FOREIGN_PREFIXES: tuple[str, ...] = (
    "module.",
    "_orig_mod.",
    "backbone.",
    "encoder.",
    "model.",
    "visual.trunk.",
    "trunk.",
    "sparse_encoder.sp_cnn.",  # SMLFR's full pre-training checkpoint (the encoder file has no prefix)
    "sp_cnn.",
)
"""Leading key prefixes that :func:`load_foreign_checkpoint` removes by default."""

_TV_BLOCK = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}


def _torchvision_convnext_key(key: str) -> str:
    """torchvision ``convnext_*`` names -> timm names."""
    m = re.match(r"^features\.0\.(\d+)\.(.*)$", key)
    if m:
        return f"stem.{m[1]}.{m[2]}"
    m = re.match(r"^features\.(\d+)\.(\d+)\.(.*)$", key)
    if m:
        index, sub, rest = int(m[1]), m[2], m[3]
        if index % 2 == 1:  # a stage: features.{2i+1}.{j}.block.{n} / .layer_scale
            stage = (index - 1) // 2
            if rest == "layer_scale":
                return f"stages.{stage}.blocks.{sub}.gamma"
            b = re.match(r"^block\.(\d+)\.(.*)$", rest)
            if b and b[1] in _TV_BLOCK:
                return f"stages.{stage}.blocks.{sub}.{_TV_BLOCK[b[1]]}.{b[2]}"
            return key
        return f"stages.{index // 2}.downsample.{sub}.{rest}"  # features.{2i}: LayerNorm2d, Conv2d
    m = re.match(r"^classifier\.(0|2)\.(.*)$", key)
    if m:
        return f"head.{'norm' if m[1] == '0' else 'fc'}.{m[2]}"
    return key


def _fb_convnext_key(key: str) -> str:
    """Original Facebook ConvNeXt names -> timm names (as timm's ``checkpoint_filter_fn``)."""
    key = key.replace("downsample_layers.0.", "stem.")
    key = re.sub(r"stages\.([0-9]+)\.([0-9]+)", r"stages.\1.blocks.\2", key)
    key = re.sub(r"downsample_layers\.([0-9]+)\.([0-9]+)", r"stages.\1.downsample.\2", key)
    key = key.replace("dwconv", "conv_dw").replace("pwconv", "mlp.fc")
    key = key.replace("grn.beta", "mlp.grn.bias").replace("grn.gamma", "mlp.grn.weight")
    if key.startswith("head."):
        key = key.replace("head.", "head.fc.", 1)
    if key.startswith("norm."):
        key = "head." + key
    return key


_CONVERTERS: dict[str, Callable[[str], str]] = {
    "timm": lambda k: k,
    "torchvision_convnext": _torchvision_convnext_key,
    "fb_convnext": _fb_convnext_key,
}


def _detect_layout(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(re.match(r"^features\.\d+\.\d+\.(block\.\d|layer_scale)", k) for k in keys):
        return "torchvision_convnext"
    if any(k.startswith("downsample_layers.") or ".dwconv." in k for k in keys):
        return "fb_convnext"
    return "timm"


def _canonical(key: str) -> str:
    # timm's features_only wrappers flatten top-level sequentials: ``stem.0`` -> ``stem_0``.
    return key.replace("_", ".")


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def load_foreign_checkpoint(
    encoder: nn.Module,
    path: str | Path,
    *,
    prefix: str | None = None,
    strip: Sequence[str] = FOREIGN_PREFIXES,
    key_map: Mapping[str, str] | Callable[[str], str | None] | None = None,
    layout: str = "auto",
    strict: bool = False,
) -> LoadReport:
    """Load a checkpoint with foreign key names into a timm backbone and report what matched.

    Steps, in order:

    1. read ``path`` (``.safetensors`` or a ``torch.save`` file, ``weights_only=True``); weights
       nested under ``state_dict`` / ``model`` / ``teacher`` / ... are unwrapped;
    2. ``prefix``: keep only keys that start with it and remove it (e.g. ``"module.encoder_q."``
       for a MoCo checkpoint, ``"teacher.backbone."`` for DINO);
    3. remove the leading ``strip`` prefixes (``module.``, ``backbone.``, ``encoder.``, ...);
    4. ``key_map``: a dict of regular expression -> replacement applied in order with
       ``re.sub``, or a function ``key -> new key`` (``None`` drops the key);
    5. ``layout``: ``"timm"`` (names as they are), ``"torchvision_convnext"`` (torchvision's
       ``features.N.M.block.K`` names), ``"fb_convnext"`` (the original ``downsample_layers`` /
       ``dwconv`` names), or ``"auto"`` (detected from the keys);
    6. match names to the model, also across timm's ``features_only`` flattening
       (``stem.0`` = ``stem_0``); tensors that differ only by singleton dimensions (a
       ``(C, 1, 1)`` layer scale for a ``(C,)`` one) are reshaped, other shape mismatches are
       reported and skipped.

    Args:
        encoder: a :class:`VisionEncoder` (its ``backbone`` is loaded) or any timm module.
        path: the checkpoint file.
        strict: raise a ``ValueError`` when a model weight is missing or a shape mismatches.
            Unexpected checkpoint keys (classification heads, projectors) are reported, never
            an error.

    Returns:
        A :class:`~uncertainty_rrsis.models._checkpoint.LoadReport`; ``unexpected`` lists
        checkpoint keys (after steps 2-5) that matched nothing.

    Raises:
        ValueError: when no checkpoint key matches a model weight (the message shows sample
            keys of both sides), or under ``strict`` as above.
    """
    target = encoder.backbone if isinstance(encoder, VisionEncoder) else encoder
    source = load_state_file(path)
    if prefix:
        source = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
        if not source:
            raise ValueError(f"load_foreign_checkpoint: no key of {path} starts with prefix {prefix!r}.")
    source = strip_prefixes(source, strip)
    if key_map is not None:
        mapped: dict[str, torch.Tensor] = {}
        for key, value in source.items():
            if callable(key_map):
                new = key_map(key)
            else:
                new = key
                for pattern, repl in key_map.items():
                    new = re.sub(pattern, repl, new)
            if new is not None:
                mapped[new] = value
        source = mapped
    if layout == "auto":
        layout = _detect_layout(source)
    if layout not in _CONVERTERS:
        raise ValueError(f"load_foreign_checkpoint: unknown layout {layout!r}; use one of {['auto', *_CONVERTERS]}.")
    convert = _CONVERTERS[layout]
    source = {convert(k): v for k, v in source.items()}

    target_state = target.state_dict()
    by_canonical: dict[str, str | None] = {}
    for key in target_state:
        canon = _canonical(key)
        by_canonical[canon] = None if canon in by_canonical else key  # None marks an ambiguous name

    report = LoadReport(source=str(path))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        name = key if key in target_state else by_canonical.get(_canonical(key))
        if name is None or name in to_load:
            report.unexpected.append(key)
            continue
        want = tuple(target_state[name].shape)
        if tuple(value.shape) != want:
            if _squeezed(value.shape) == _squeezed(want):
                value = value.reshape(want)
            else:
                report.mismatched.append((name, tuple(value.shape), want))
                continue
        to_load[name] = value
    if not to_load:
        raise ValueError(
            f"load_foreign_checkpoint: no key of {path} matches the model ({type(target).__name__}); "
            f"layout={layout!r}. Checkpoint keys look like {list(source)[:5]}; model keys look like "
            f"{list(target_state)[:5]}. Select a sub-tree with prefix=..., or rename keys with key_map=..."
        )
    target.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = [k for k in target_state if k not in to_load]
    if strict and (report.missing or report.mismatched):
        raise ValueError(f"load_foreign_checkpoint (strict): incomplete load.\n{report.summary()}")
    return report


def check_vision_weights(vision: VisionConfig) -> None:
    """Refuse an encoder meant to start from pretrained weights without any (``vision.requires_weights``);
    warn when random initialisation was asked for on purpose (``weights="none"``). ``CroBIMU`` calls it.

    Raises:
        ValueError: ``requires_weights`` and no ``weights``; the message says what to pass.
    """
    if not vision.requires_weights:
        return
    if vision.weights is None:
        raise ValueError(
            f"CroBIMU: the vision encoder {vision.name!r} is meant to start from pretrained weights (the paper "
            "initialises ConvNeXt-B from SMLFR) and vision.weights is None. Pass a local weights file, e.g. "
            "get_preset('paper', vision={'weights': 'convnext_base.safetensors'}) (timm, torchvision, Facebook or "
            "SMLFR layout; uncertainty_rrsis.models.load_foreign_checkpoint maps foreign keys), or "
            "vision={'weights': 'none'} to build it randomly initialised on purpose."
        )
    if str(vision.weights).lower() in RANDOM_WEIGHTS:
        warnings.warn(
            f"CroBIMU: building {vision.name!r} from random initialisation (vision.weights={vision.weights!r}); the "
            "paper starts from pretrained weights, so a model trained from here scores far lower.",
            RuntimeWarning, stacklevel=3,
        )

