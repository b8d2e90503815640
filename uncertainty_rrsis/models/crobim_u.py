"""CroBIM-U, the reference model: timm vision encoder + transformers text encoder +
``RiskGuidedDecoder(MaskDecoder)``, with safetensors save / load.

Data flow::

    images (B, 3, H, W) --pad to a multiple of 32--> VisionEncoder --> 4 levels (B, C, H_s, W_s)
    input_ids, attention_mask --> TextEncoder --> text (B, L, C), padding mask (B, L) True = pad
    RiskGuidedDecoder(MaskDecoder): RUS -> UGF -> decoder -> UDLR   (logits at stride 4)
    logits, coarse_logits --bilinear on logits, crop--> (B, 1, H, W)

Axis legend
    b: batch   c: width (``dim``)   l: text tokens   h, w: spatial
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._contracts import check_channels, check_float, check_rank, check_same_batch, checks_enabled, trust_inputs
from .._ops import resize_logits
from .._version import __version__
from ..wrapper import RiskGuidedDecoder, RiskGuidedOutput
from ._checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    LoadReport,
    load_state_file,
    match_state,
    read_json,
    run_folder_message,
    save_safetensors,
    strip_wrapper_prefixes,
    write_json,
)
from .card import write_model_card
from .config import CroBIMUConfig
from .decoder import MaskDecoder
from .hub import push_to_hub, resolve_pretrained
from .presets import get_preset
from .text import TextEncoder
from .vision import VisionEncoder, check_vision_weights

__all__ = ["CroBIMU", "WEIGHTS_NAME", "CONFIG_NAME"]

_FORMAT = "uncertainty_rrsis.CroBIMU"
_EXPECTED_STRIDES = (4, 8, 16, 32)


class CroBIMU(nn.Module):
    """The reference CroBIM-U model (ConvNeXt + BERT + Mask2Former-style decoder + RUS/UGF/UDLR).

    Args:
        config: a :class:`~uncertainty_rrsis.models.config.CroBIMUConfig` (default: the
            ``paper`` layout with BERT weights from ``bert-base-uncased``); see also
            :meth:`from_preset`.
        device, dtype: factory arguments.

    Attributes:
        config: the config it was built from.
        dim: the common width C (int).
        size_divisor: inputs are padded to a multiple of it (int, 32).
        vision: the :class:`VisionEncoder`.
        text: the :class:`TextEncoder`.
        decoder: the :class:`~uncertainty_rrsis.RiskGuidedDecoder` wrapping the
            :class:`~uncertainty_rrsis.models.decoder.MaskDecoder` (``decoder.decoder``).

    Image sizes: any ``H, W``. When they are not multiples of ``size_divisor`` (32) the images
    are zero-padded at the bottom and right (zeros = the mean colour after ImageNet
    normalisation), and ``logits`` / ``coarse_logits`` are upsampled to the padded size and
    cropped back to ``(H, W)``, so they align pixel for pixel with the input. ``uncertainty``
    (stride 32) and ``refine_mask`` (stride 4) stay on the grid of the padded canvas; use
    :meth:`to_image_size` to bring them to the input size. With ``config.pad_input=False`` such
    sizes raise a ``ValueError`` instead.

    Shapes:
        - images: (B, 3, H, W) float, normalised
        - input_ids: (B, L) int, L <= ``config.text.max_tokens`` (20)
        - attention_mask: (B, L) int, Hugging Face convention (1 = keep); or instead
        - text_padding_mask: (B, L) bool, True = padding
        - output: :class:`~uncertainty_rrsis.RiskGuidedOutput` with ``logits`` and
          ``coarse_logits`` (B, 1, H, W), ``uncertainty`` (B, 1, H'/32, W'/32) or None (Base),
          ``refine_mask`` (B, 1, H'/4, W'/4) or None, where H', W' are the padded sizes.
    """

    def __init__(
        self,
        config: CroBIMUConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        config = config if config is not None else CroBIMUConfig()
        if not isinstance(config, CroBIMUConfig):
            raise TypeError(f"CroBIMU: `config` must be a CroBIMUConfig; got {type(config).__name__}.")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.config = config
        self.dim = config.dim
        self.size_divisor = config.size_divisor
        self.pad_input = config.pad_input
        v = config.vision
        check_vision_weights(v)
        self.vision = VisionEncoder(
            v.name,
            config.dim,
            out_indices=v.out_indices,
            weights=v.weights,
            model_kwargs=v.model_kwargs,
            norm_groups=v.norm_groups,
            **factory,
        )
        if self.vision.strides != _EXPECTED_STRIDES:
            raise ValueError(
                f"CroBIMU: the decoder needs feature strides {_EXPECTED_STRIDES}; backbone {v.name!r} with "
                f"out_indices={v.out_indices} gives {self.vision.strides}. Choose out_indices that select "
                "the stride-4/8/16/32 levels."
            )
        self.text = TextEncoder.from_config(config.text, config.dim, **factory)
        d = config.decoder
        mask_decoder = MaskDecoder(
            config.dim,
            num_layers=d.num_layers,
            num_heads=d.num_heads,
            num_points=d.num_points,
            ffn_dim=d.ffn_dim,
            num_mask_layers=d.num_mask_layers,
            dropout=d.dropout,
            **factory,
        )
        self.decoder = RiskGuidedDecoder(
            mask_decoder,
            config.dim,
            fused_levels=config.fused_levels,
            score_level=config.score_level,
            use_fusion=config.use_fusion,
            use_refinement=config.use_refinement,
            refine_at=config.refine_at,
            risk_head=config.risk_head,
            pixel_risk_head=config.pixel_risk_head,
            risk_kwargs={"detach": config.risk_detach, "hidden_dim": config.risk_hidden_dim},
            num_heads=config.fusion_heads,
            refine_hidden_dim=config.refine_hidden_dim,
            fusion_kwargs={"dropout": config.fusion_dropout},
            refinement_kwargs={
                "tau": config.refine_tau,
                "temperature": config.refine_temperature,
                "blur_kernel_size": config.refine_blur_kernel_size,
                "mask_source": config.refine_mask_source,
            },
            **factory,
        )
        trust_inputs(self.vision, self.text, self.decoder)  # CroBIMU checks at its entry

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> CroBIMU:
        """Build ``CroBIMU(get_preset(name, **overrides))``."""
        return cls(get_preset(name, **overrides), device=device, dtype=dtype)

    # ------------------------------------------------------------------------------ forward

    def _check(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        text_padding_mask: torch.Tensor | None = None,
    ) -> None:
        owner = type(self).__name__
        check_rank(owner, "images", images, "(B, 3, H, W)")
        check_channels(owner, "images", images, 3, dim=1, layout="(B, 3, H, W)", fix="Pass RGB images, NCHW.")
        check_float(owner, "images", images)
        check_rank(owner, "input_ids", input_ids, "(B, L)")
        check_same_batch(owner, [("images", images), ("input_ids", input_ids)])
        height, width = int(images.shape[-2]), int(images.shape[-1])
        if not self.pad_input and (height % self.size_divisor or width % self.size_divisor):
            raise ValueError(
                f"{owner}: image size {height}x{width} is not a multiple of {self.size_divisor} and "
                f"pad_input=False. Resize the images (the paper uses 480x480) or set pad_input=True in the "
                "config to zero-pad and crop the logits back."
            )
        self.text._check(input_ids, attention_mask, text_padding_mask)  # token ids and masks, once

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        text_padding_mask: torch.Tensor | None = None,
    ) -> RiskGuidedOutput:
        """Segment the object each sentence refers to; see the class docstring for shapes."""
        if checks_enabled(self):
            self._check(images, input_ids, attention_mask, text_padding_mask)
        height, width = images.shape[-2], images.shape[-1]
        pad_h = (-height) % self.size_divisor
        pad_w = (-width) % self.size_divisor
        padded = bool(pad_h or pad_w)
        if padded:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        canvas = (images.shape[-2], images.shape[-1])

        # text first: transformers reads ``padding_mask.all()`` on the host (a device sync on a GPU);
        # done before the vision encoder is queued, the host waits for almost nothing
        text, text_padding_mask = self.text(input_ids, attention_mask, text_padding_mask=text_padding_mask)
        features = self.vision(images)
        out = self.decoder(features, text, text_padding_mask, output_size=canvas)

        def to_input(logits: torch.Tensor) -> torch.Tensor:
            logits = resize_logits(logits, canvas)
            return logits[..., :height, :width] if padded else logits

        coarse = to_input(out.coarse_logits)
        logits = coarse if self.decoder.refinement is None else to_input(out.logits)
        return out._replace(logits=logits, coarse_logits=coarse)

    def to_image_size(self, x: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Bring a map on the padded canvas (``uncertainty``, ``refine_mask``) to the input size.

        Resizes bilinearly to the padded canvas of ``image_size`` and crops the padding away.

        Shapes:
            x: (B, K, H', W') -> (B, K, H, W) with ``image_size = (H, W)``
        """
        height, width = int(image_size[0]), int(image_size[1])
        canvas = (
            height + (-height) % self.size_divisor,
            width + (-width) % self.size_divisor,
        )
        return resize_logits(x, canvas)[..., :height, :width]

    # ------------------------------------------------------------------------- bookkeeping

    def num_parameters(self, *, trainable_only: bool = False) -> dict[str, int]:
        """Parameter counts by part.

        Returns:
            ``{"vision", "text", "decoder", "rus", "ugf", "udlr", "risk", "uncertainty", "total"}``;
            ``vision`` / ``text`` include their projections to C, ``decoder`` is the
            Mask2Former-style decoder alone, ``risk`` the optional risk head (0 without it),
            ``uncertainty`` = RUS + UGF + UDLR + risk head (0 for Base).
        """

        def count(module: nn.Module | None) -> int:
            if module is None:
                return 0
            return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

        wrapper = self.decoder
        parts = {
            "vision": count(self.vision),
            "text": count(self.text),
            "decoder": count(wrapper.decoder),
            "rus": count(wrapper.scorer),
            "ugf": count(wrapper.fusion),
            "udlr": count(wrapper.refinement),
            "risk": count(wrapper.risk) + count(wrapper.pixel_risk),
        }
        parts["uncertainty"] = parts["rus"] + parts["ugf"] + parts["udlr"] + parts["risk"]
        parts["total"] = count(self)
        return parts

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups applying the encoders' learning-rate multipliers.

        Groups (empty ones are left out; frozen parameters are never included):
        ``"vision"`` (the timm backbone, ``base_lr * config.vision.lr_multiplier``),
        ``"text"`` (the transformers encoder, ``base_lr * config.text.lr_multiplier``) and
        ``"head"`` (projections, decoder, uncertainty modules, ``base_lr``). Each group has the
        keys ``params``, ``lr`` and ``name``::

            optimizer = torch.optim.AdamW(model.param_groups(1e-4), weight_decay=0.01)
        """
        vision_ids = {id(p) for p in self.vision.backbone.parameters()}
        text_ids = {id(p) for p in self.text.backbone.parameters()}
        groups: dict[str, list[nn.Parameter]] = {"vision": [], "text": [], "head": []}
        for p in self.parameters():
            if not p.requires_grad:
                continue
            key = "vision" if id(p) in vision_ids else "text" if id(p) in text_ids else "head"
            groups[key].append(p)
        lrs = {
            "vision": base_lr * self.config.vision.lr_multiplier,
            "text": base_lr * self.text.lr_multiplier,
            "head": base_lr,
        }
        return [{"params": ps, "lr": lrs[name], "name": name} for name, ps in groups.items() if ps]

    # --------------------------------------------------------------------------- save / load

    def saved_config(self) -> CroBIMUConfig:
        """The config written by :meth:`save_pretrained`: no external weights (the safetensors
        file holds them) and the text architecture inlined, so loading needs no download."""
        return self.config.replace(
            vision={"weights": None, "requires_weights": False},
            text={"pretrained": False, "hf_config": self.text.hf_config_dict()},
        )

    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict with ``module.`` / ``_orig_mod.`` prefixes removed."""
        return strip_wrapper_prefixes(self.state_dict())

    def save_pretrained(
        self, directory: str | Path, *, tokenizer: Any | None = None, card: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``model.safetensors``, ``config.json``, the model card ``README.md`` (and ``tokenizer/``
        when given).

        Call it on the model itself, or on a DDP- / ``torch.compile``-wrapped one (the
        wrappers forward the call; keys are stripped of ``module.`` / ``_orig_mod.``).

        Args:
            directory: the checkpoint folder (created when missing).
            tokenizer: the Hugging Face tokenizer, saved under ``tokenizer/``.
            card: what the model card says about the training data, the recipe and the metrics
                (:mod:`uncertainty_rrsis.models.card`). Without it, a folder
                ``<run>/checkpoints/<name>`` takes them from the run's ``config.json`` and
                ``metrics.json`` when present. :meth:`from_pretrained` ignores the card.

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt", "library": "uncertainty_rrsis", "library_version": __version__}
        save_safetensors(self.state_dict_for_saving(), directory / WEIGHTS_NAME, metadata=metadata)
        write_json(
            directory / CONFIG_NAME,
            {"format": _FORMAT, "library_version": __version__, "config": self.saved_config().to_dict()},
        )
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory / "tokenizer"))
        write_model_card(directory, card=card, parameters=self.num_parameters())
        return directory

    def push_to_hub(
        self, repo_id: str, *, tokenizer: Any | None = None, card: Mapping[str, Any] | None = None, **hub: Any
    ) -> Any:
        """Write :meth:`save_pretrained`'s folder and upload it to the Hub repository ``repo_id``.

        ``hub`` takes ``token``, ``private``, ``revision``, ``commit_message`` and ``create_pr``
        (:func:`~uncertainty_rrsis.models.hub.push_to_hub`, which also uploads a checkpoint folder
        that already exists, such as a training run's ``checkpoints/best``). Returns the ``CommitInfo``.
        """
        with tempfile.TemporaryDirectory(prefix="uncertainty-rrsis-push-") as tmp:
            return push_to_hub(self.save_pretrained(tmp, tokenizer=tokenizer, card=card), repo_id, **hub)

    @staticmethod
    def config_from_pretrained(directory: str | Path) -> CroBIMUConfig:
        """The config saved in ``directory/config.json``, set up to be filled from ``model.safetensors``
        (no external vision weights, no pretrained text download).

        Raises:
            ValueError: ``config.json`` is truncated or corrupt, or ``directory`` is a training run
                folder (the message names its checkpoints).
        """
        path = Path(directory) / CONFIG_NAME
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is truncated or corrupt and cannot be read ({err}): copy the checkpoint folder again from "
                "where it came from, or use another checkpoint."
            ) from err
        if isinstance(data, dict) and "train" in data and "config" not in data:
            raise ValueError(run_folder_message(Path(directory)))
        config = CroBIMUConfig.from_dict(data["config"] if "config" in data else data)
        return config.replace(vision={"weights": None, "requires_weights": False}, text={"pretrained": False})

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        strict: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        return_report: bool = False,
        **hub: Any,
    ) -> CroBIMU | tuple[CroBIMU, LoadReport]:
        """Load a model written by :meth:`save_pretrained` (returned in eval mode).

        Args:
            directory: the folder with ``config.json`` and ``model.safetensors``, or a Hugging Face
                Hub model id (``"org/name"``) whose repository holds such a folder.
            strict: raise a ``RuntimeError`` listing missing, unexpected and mis-shaped keys
                when the weights do not fit the config exactly. With ``strict=False`` the
                matching tensors load, the rest is reported in a warning.
            return_report: also return the :class:`LoadReport`.
            **hub: for a Hub id: ``revision``, ``cache_dir``, ``local_files_only``, ``token``,
                ``force_download`` (:func:`~uncertainty_rrsis.models.hub.resolve_pretrained`).
        """
        directory = resolve_pretrained(directory, caller="CroBIMU.from_pretrained", **hub)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if directory.is_file():
            raise ValueError(
                f"CroBIMU.from_pretrained: {directory} is a file; expected a checkpoint folder (config.json and "
                "model.safetensors, as save_pretrained and training write them). A bare weights file loads with "
                "CroBIMU(config) and load_state_dict, or into the vision encoder with load_foreign_checkpoint."
            )
        if (directory / "checkpoints").is_dir() and not weights_path.is_file():
            raise ValueError(f"CroBIMU.from_pretrained: {run_folder_message(directory)}")
        config = cls.config_from_pretrained(directory) if config_path.is_file() else None
        for path in (config_path, weights_path):
            if not path.is_file():
                hint = ("\n" + run_folder_message(directory)) if (directory / "checkpoints").is_dir() else ""
                raise FileNotFoundError(
                    f"CroBIMU.from_pretrained: {path.name} not found in {directory}; expected a folder written "
                    f"by CroBIMU.save_pretrained (config.json + model.safetensors).{hint}"
                )
        state = strip_wrapper_prefixes(load_state_file(weights_path))
        model = cls(config, device=device, dtype=dtype)
        to_load, report = match_state(model.state_dict(), state, source=str(weights_path))
        if strict and not report.ok:
            raise RuntimeError(
                f"CroBIMU.from_pretrained: the weights in {weights_path} do not fit the model that {config_path} "
                f"describes (strict=True):\n{report.summary(limit=3)}\nLikely cause: config.json and "
                "model.safetensors come from different checkpoints, or config.json was edited. Copy both from the "
                "same checkpoint folder, or pass strict=False to load what matches."
            )
        model.load_state_dict(to_load, strict=False)
        if not report.ok:
            warnings.warn(f"CroBIMU.from_pretrained: partial load.\n{report.summary()}", stacklevel=2)
        model.eval()
        return (model, report) if return_report else model

    def extra_repr(self) -> str:
        return f"dim={self.dim}, variant={self.config.variant!r}, size_divisor={self.size_divisor}"

