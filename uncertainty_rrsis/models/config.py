"""Configuration of the reference CroBIM-U model: frozen dataclasses with a JSON round-trip.

Every size of every part is a field, so a model is fully described by its config (and a
checkpoint folder holds ``config.json`` next to ``model.safetensors``). The four dataclasses:

- :class:`VisionConfig` -- the timm backbone and its weights;
- :class:`TextConfig` -- the transformers encoder and its weights;
- :class:`DecoderConfig` -- the Mask2Former-style decoder;
- :class:`CroBIMUConfig` (alias :class:`ModelConfig`) -- the whole model: the three above,
  the common width ``dim`` (C), the ablation switches ``use_fusion`` / ``use_refinement`` and
  the options of the uncertainty modules.

``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json`` round-trip exactly; ``from_dict``
rejects unknown keys (a typo in a config file is an error, not a silent default).
``replace(**changes)`` returns a modified copy; a sub-config can be changed with a dict that is
merged into it: ``cfg.replace(vision={"weights": "convnext_base.safetensors"})``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .tokenizer import FROM_SCRATCH

__all__ = ["VisionConfig", "TextConfig", "DecoderConfig", "CroBIMUConfig", "ModelConfig"]

_C = TypeVar("_C", bound="_ConfigBase")


def _freeze(value: Any) -> Any:
    """Lists become tuples (JSON gives lists), recursively; dicts are copied."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _freeze(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class _ConfigBase:
    """Shared dict / JSON / replace logic of the config dataclasses."""

    _nested: ClassVar[dict[str, type[_ConfigBase]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._nested:
                sub_cls = self._nested[f.name]
                if isinstance(value, Mapping):
                    object.__setattr__(self, f.name, sub_cls.from_dict(value))
                elif not isinstance(value, sub_cls):
                    raise TypeError(
                        f"{type(self).__name__}.{f.name} must be a {sub_cls.__name__} or a dict; "
                        f"got {type(value).__name__}."
                    )
            elif isinstance(value, Path):
                object.__setattr__(self, f.name, str(value))
            else:
                object.__setattr__(self, f.name, _freeze(value))
        self._validate()

    def _validate(self) -> None:
        """Range checks; subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _ConfigBase) else _jsonable(value)
        return out

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """Build from a dict as written by :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown key(s) {unknown}; the known keys are {sorted(names)}. "
                "Check the spelling in the config file."
            )
        return cls(**dict(data))

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The config as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls: type[_C], source: str | Path) -> _C:
        """Read from a JSON file path, or from JSON text (a string starting with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            return cls.from_dict(json.loads(source))
        return cls.from_dict(json.loads(Path(source).read_text(encoding="utf-8")))

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with ``changes``; a dict given for a sub-config is merged into it."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown field(s) {unknown}; the fields are {sorted(names)}."
            )
        resolved: dict[str, Any] = {}
        for name, value in changes.items():
            current = getattr(self, name)
            if isinstance(current, _ConfigBase) and isinstance(value, Mapping):
                value = current.replace(**value)
            resolved[name] = value
        return dataclasses.replace(self, **resolved)  # type: ignore[type-var]


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}: `{name}` must be > 0; got {value}.")


@dataclass(frozen=True)
class VisionConfig(_ConfigBase):
    """The timm vision backbone (``features_only=True``).

    Attributes:
        name: timm model name (``convnext_base``; a pretrained tag such as
            ``convnext_base.fb_in22k`` selects which weights ``weights="hub"`` downloads).
        out_indices: backbone stages to return; the reference decoder needs four levels at
            strides 4, 8, 16, 32 (finest first).
        weights: ``None`` (random init), ``"none"`` (random init, asked for explicitly), a local
            weights file (``.pth``/``.safetensors``: timm's key names, or SMLFR's, torchvision's or
            Facebook's ConvNeXt layout, read by
            :func:`~uncertainty_rrsis.models.load_foreign_checkpoint`), or ``"hub"`` (let timm
            download its default weights -- needs network access).
        model_kwargs: extra keyword arguments of ``timm.create_model`` (``drop_path_rate``,
            ``dims``, ``depths``, ...).
        norm_groups: maximum number of GroupNorm groups in the 1x1 projections (the largest
            divisor of ``dim`` not above it is used).
        lr_multiplier: learning-rate multiplier of the backbone in ``CroBIMU.param_groups``.
        requires_weights: the encoder is meant to start from pretrained weights (the ``paper``
            preset): building the model with ``weights=None`` is then an error, and ``"none"``
            builds it randomly initialised on purpose, with a warning. A checkpoint's config
            (:meth:`CroBIMU.saved_config`) has it off: its weights come with it.
    """

    name: str = "convnext_base"
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    weights: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    norm_groups: int = 32
    lr_multiplier: float = 1.0
    requires_weights: bool = False

    def _validate(self) -> None:
        _positive("VisionConfig", norm_groups=self.norm_groups)
        if self.lr_multiplier < 0:
            raise ValueError(f"VisionConfig: `lr_multiplier` must be >= 0; got {self.lr_multiplier}.")


@dataclass(frozen=True)
class TextConfig(_ConfigBase):
    """The transformers text encoder.

    Attributes:
        name: a Hugging Face model id or a local folder (``bert-base-uncased``), or
            ``"from-scratch"``: a small BERT (``hf_config``) learnt with the model and a WordPiece
            tokenizer built from the training sentences (:mod:`uncertainty_rrsis.models.tokenizer`;
            needs ``pretrained=False`` and ``freeze=False``).
        pretrained: load the weights of ``name``; ``False`` builds a randomly initialised
            encoder from ``hf_config`` (or from the config of ``name``).
        hf_config: the architecture as a transformers config dict (must contain ``model_type``),
            used when ``pretrained=False``; ``{"model_type": "bert"}`` is the bert-base layout.
            ``CroBIMU.save_pretrained`` fills it in, so loading a saved model needs no download.
        max_tokens: longest accepted token sequence (20 in the paper).
        freeze: keep the encoder fixed (no gradients, eval mode); the projection still trains.
        lr_multiplier: learning-rate multiplier of the encoder in ``CroBIMU.param_groups``.
    """

    name: str = "bert-base-uncased"
    pretrained: bool = True
    hf_config: dict[str, Any] | None = None
    max_tokens: int = 20
    freeze: bool = False
    lr_multiplier: float = 1.0

    def _validate(self) -> None:
        _positive("TextConfig", max_tokens=self.max_tokens)
        if self.lr_multiplier < 0:
            raise ValueError(f"TextConfig: `lr_multiplier` must be >= 0; got {self.lr_multiplier}.")
        if self.name == FROM_SCRATCH and self.pretrained:
            raise ValueError("TextConfig: name 'from-scratch' is learnt with the model and has no pretrained weights; "
                             "set pretrained=False.")
        if self.name == FROM_SCRATCH and self.freeze:
            raise ValueError("TextConfig: name 'from-scratch' is learnt with the model; freeze=True would keep it at "
                             "its random initialisation. Set freeze=False, or name a pretrained encoder to freeze.")
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise ValueError(
                "TextConfig: `hf_config` must contain 'model_type' (e.g. {'model_type': 'bert'}); "
                f"got keys {sorted(self.hf_config)}."
            )


@dataclass(frozen=True)
class DecoderConfig(_ConfigBase):
    """The Mask2Former-style decoder (``MaskDecoder``); its width is ``CroBIMUConfig.dim``.

    Attributes:
        num_layers: deformable-attention pixel-decoder layers (6 in the paper).
        num_heads: attention heads.
        num_points: sampling points per head and level.
        ffn_dim: hidden width of the feed-forward blocks.
        num_mask_layers: masked-attention layers of the mask head.
        dropout: dropout probability.
    """

    num_layers: int = 6
    num_heads: int = 8
    num_points: int = 4
    ffn_dim: int = 1024
    num_mask_layers: int = 3
    dropout: float = 0.0

    def _validate(self) -> None:
        _positive(
            "DecoderConfig",
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_points=self.num_points,
            ffn_dim=self.ffn_dim,
        )
        if self.num_mask_layers < 0:
            raise ValueError(f"DecoderConfig: `num_mask_layers` must be >= 0; got {self.num_mask_layers}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DecoderConfig: `dropout` must be in [0, 1); got {self.dropout}.")


@dataclass(frozen=True)
class CroBIMUConfig(_ConfigBase):
    """The whole reference model.

    Attributes:
        vision, text, decoder: the parts (a dict is accepted and converted).
        dim: the common embedding width C (256 in the paper): visual projections, text
            projection, decoder and uncertainty modules.
        image_size: the training / evaluation resolution (480 in the paper), a multiple of
            ``size_divisor``. The model itself accepts any size; data pipelines and benchmarks read
            this field.
        use_fusion: add UGF (paper Eq. 9-12); with ``use_refinement`` the four ablation rows.
        use_refinement: add UDLR (paper Eq. 13-16).
        fused_levels: feature levels (0 = stride 4 ... 3 = stride 32) that UGF updates.
        score_level: the feature level RUS scores (-1 = stride 32, the paper's; a finer level is an
            option beyond the paper).
        fusion_heads: attention heads of UGF.
        fusion_dropout: dropout on UGF's update ``Delta V`` (Eq. 9; the paper gives no value).
        refine_hidden_dim: hidden width of UDLR's refinement head.
        refine_tau: threshold ``tau`` of UDLR's soft mask (Eq. 13; the paper gives no value).
        refine_temperature: temperature ``t`` of UDLR's soft mask (Eq. 13; no value in the paper).
        refine_blur_kernel_size: odd kernel size of the optional ``Blur`` of ``U^p`` in Eq. 13;
            None turns the blur off.
        refine_at: where UDLR runs: ``"feature"`` (the stride-4 grid of the decoder's logits, then
            upsampled; this library's cheaper reading) or ``"input"`` (the input resolution, the
            paper's "at full resolution", with ``P_fg`` and ``F`` upsampled first).
        risk_head: add the per-sample risk head (:class:`~uncertainty_rrsis.modules.SampleRiskHead`,
            an option beyond the paper): failure probability and predicted IoU of each answer.
        pixel_risk_head: add the pixel risk head (:class:`~uncertainty_rrsis.modules.PixelRiskHead`,
            an option beyond the paper): error logits of the final prediction.
        risk_detach: the risk heads read the model without passing it a gradient.
        risk_hidden_dim: width of the per-sample risk head.
        refine_mask_source: what UDLR's mask thresholds: ``"uncertainty"`` (``U^p``, the paper),
            ``"margin"`` or ``"max"`` of the two (options beyond the paper).
        size_divisor: inputs are padded (bottom / right, with zeros) to a multiple of this and
            the logits are cropped back to the input size.
        pad_input: ``False`` raises a ``ValueError`` instead of padding.
    """

    _nested = {"vision": VisionConfig, "text": TextConfig, "decoder": DecoderConfig}

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    dim: int = 256
    image_size: int = 480
    use_fusion: bool = True
    use_refinement: bool = True
    fused_levels: tuple[int, ...] = (1, 2, 3)
    score_level: int = -1
    fusion_heads: int = 8
    fusion_dropout: float = 0.0
    refine_hidden_dim: int = 64
    refine_tau: float = 0.5
    refine_temperature: float = 0.1
    refine_blur_kernel_size: int | None = 3
    refine_at: str = "feature"
    refine_mask_source: str = "uncertainty"
    risk_head: bool = False
    pixel_risk_head: bool = False
    risk_detach: bool = True
    risk_hidden_dim: int = 64
    size_divisor: int = 32
    pad_input: bool = True

    def _validate(self) -> None:
        _positive(
            "CroBIMUConfig",
            dim=self.dim,
            image_size=self.image_size,
            fusion_heads=self.fusion_heads,
            refine_hidden_dim=self.refine_hidden_dim,
            size_divisor=self.size_divisor,
        )
        for name, heads in (("decoder.num_heads", self.decoder.num_heads), ("fusion_heads", self.fusion_heads)):
            if self.dim % heads:
                raise ValueError(f"CroBIMUConfig: `dim`={self.dim} must be divisible by `{name}`={heads}.")
        if not -4 <= self.score_level < 4:
            raise ValueError(
                f"CroBIMUConfig: `score_level` must index the 4 feature levels (-4..3); got {self.score_level}."
            )
        if self.refine_at not in ("feature", "input"):
            raise ValueError(f"CroBIMUConfig: `refine_at` must be 'feature' or 'input'; got {self.refine_at!r}.")
        if (self.risk_head or self.pixel_risk_head) and not (self.use_fusion or self.use_refinement):
            raise ValueError("CroBIMUConfig: the risk heads read the uncertainty map, which Base (no UGF, no UDLR) "
                             "does not have; set risk_head=False and pixel_risk_head=False for Base (the bundled "
                             "config rows/base does).")
        if self.refine_mask_source not in ("uncertainty", "margin", "max"):
            raise ValueError(
                "CroBIMUConfig: `refine_mask_source` must be 'uncertainty', 'margin' or 'max'; "
                f"got {self.refine_mask_source!r}."
            )
        if self.image_size % self.size_divisor:
            raise ValueError(
                f"CroBIMUConfig: `image_size`={self.image_size} must be a multiple of `size_divisor`="
                f"{self.size_divisor}: the datasets resize every image to it, and on such a size the maps the "
                f"model returns (U, M) cover the image exactly. Choose e.g. "
                f"{self.image_size - self.image_size % self.size_divisor} or "
                f"{self.image_size - self.image_size % self.size_divisor + self.size_divisor}."
            )
        if len(self.vision.out_indices) != 4:
            raise ValueError(
                "CroBIMUConfig: the reference decoder needs four feature levels (strides 4, 8, 16, 32); "
                f"got vision.out_indices={self.vision.out_indices}."
            )

    @property
    def variant(self) -> str:
        """The ablation row: ``"Base"``, ``"+UGF"``, ``"+UDLR"`` or ``"Full"``."""
        return {
            (False, False): "Base",
            (True, False): "+UGF",
            (False, True): "+UDLR",
            (True, True): "Full",
        }[(self.use_fusion, self.use_refinement)]


ModelConfig = CroBIMUConfig
"""Alias of :class:`CroBIMUConfig`."""
