"""Text encoder of the reference model: any transformers encoder, projected to C channels.

:class:`TextEncoder` loads a Hugging Face encoder from a model id or a local folder (BERT by
default), built **without its pooler** -- an unused pooler leaves parameters without gradients
and breaks ``DistributedDataParallel``. The Hugging Face ``attention_mask`` (1 = keep) is
converted here, once, into the library's padding mask (bool, True = padding); everything
downstream uses the library's mask.

``MINILM_ID`` names ``sentence-transformers/all-MiniLM-L6-v2`` (a pretrained 6-layer BERT, hidden
384) on the Hub, a light pretrained alternative to the ``tiny`` preset's encoder learnt from scratch.

Axis legend
    b: batch   l: text tokens   d: encoder hidden width   c: output width (``dim``)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .._attention import keep_from_padding, padding_from_keep
from .._contracts import check_rank, check_same_batch, checks_enabled
from .config import TextConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["TextEncoder", "MINILM_ID"]


def _transformers_major() -> int:
    try:
        import transformers

        return int(str(transformers.__version__).split(".")[0])
    except (ImportError, ValueError):
        return 0


#: transformers 5 takes a prepared 4-D attention mask as it is (no host read of a 2-D mask).
_PREPARED_4D_MASKS = _transformers_major() >= 5

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _hidden_size(config: Any) -> int:
    for attr in ("hidden_size", "d_model", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"TextEncoder: cannot find the hidden width of {type(config).__name__} (no hidden_size/d_model).")


def _pooling_kwargs(config: Any) -> dict[str, Any]:
    """``{"add_pooling_layer": False}`` when the architecture's constructor takes that flag."""
    from transformers import AutoModel

    try:
        cls = AutoModel._model_mapping[type(config)]
    except (KeyError, AttributeError, ValueError):
        return {}
    try:
        # the value is the model class (transformers annotates it as a tuple of classes)
        params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    except (TypeError, ValueError):
        return {}
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}


def build_hf_encoder(
    name: str | Path, *, pretrained: bool = True, hf_config: Mapping[str, Any] | None = None
) -> nn.Module:
    """A transformers encoder without pooler.

    ``pretrained=True`` loads weights from ``name`` (id or folder). ``pretrained=False`` builds a
    random initialisation from ``hf_config`` (a config dict with ``model_type``; no file or
    network access) or, without it, from the config of ``name``.
    """
    from transformers import AutoConfig, AutoModel

    source = str(name)
    if pretrained:
        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(source)
        verbosity = hf_logging.get_verbosity()
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the pooler weights are left out on purpose: no "unexpected keys" report
        hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(source, config=config, **_pooling_kwargs(config))
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
    else:
        if hf_config is not None:
            fields = dict(hf_config)
            config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        else:
            config = AutoConfig.from_pretrained(source)
        model = AutoModel.from_config(config, **_pooling_kwargs(config))
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    if getattr(model, "pooler", None) is not None:  # architectures without the constructor flag
        model.pooler = None
    return model


class TextEncoder(nn.Module):
    """A transformers encoder (no pooler) followed by a Linear projection to ``dim``.

    Args:
        name: Hugging Face model id or local folder.
        dim: output width C.
        pretrained: load the weights of ``name``; ``False`` gives a random initialisation
            from ``hf_config`` (or the config of ``name``).
        hf_config: transformers config dict (with ``model_type``) for ``pretrained=False``.
        max_tokens: longest accepted sequence; longer inputs raise a ``ValueError``.
        freeze: no gradients for the encoder and keep it in eval mode (the projection trains).
        lr_multiplier: read by ``CroBIMU.param_groups`` for the encoder's parameters.

    Attributes:
        backbone: the transformers model (no pooler).
        hidden_dim: its width (int).
        dim: output width (int).
        max_tokens: longest accepted sequence (int).
        freeze: whether the encoder is frozen (bool).
        lr_multiplier: learning-rate multiplier of the encoder (float).
        proj: ``Linear(hidden_dim, dim)``.

    Shapes:
        input_ids: (B, L) int, L <= max_tokens
        attention_mask: (B, L) Hugging Face mask, 1 = keep (int); or
        text_padding_mask: (B, L) bool, True = padding
        -> (text (B, L, dim), text_padding_mask (B, L) bool True = padding)
    """

    def __init__(
        self,
        name: str | Path = "bert-base-uncased",
        dim: int = 256,
        *,
        pretrained: bool = True,
        hf_config: Mapping[str, Any] | None = None,
        max_tokens: int = 20,
        freeze: bool = False,
        lr_multiplier: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        self.backbone = build_hf_encoder(name, pretrained=pretrained, hf_config=hf_config)
        self.name = str(name)
        self.hidden_dim = _hidden_size(self.backbone.config)
        self.dim = int(dim)
        self.max_tokens = int(max_tokens)
        self.freeze = bool(freeze)
        self.lr_multiplier = float(lr_multiplier)
        self.proj = nn.Linear(self.hidden_dim, self.dim)
        if self.freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @classmethod
    def from_config(
        cls,
        config: TextConfig,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEncoder:
        """Build from a :class:`~uncertainty_rrsis.models.config.TextConfig`."""
        return cls(
            config.name,
            dim,
            pretrained=config.pretrained,
            hf_config=config.hf_config,
            max_tokens=config.max_tokens,
            freeze=config.freeze,
            lr_multiplier=config.lr_multiplier,
            device=device,
            dtype=dtype,
        )

    def hf_config_dict(self) -> dict[str, Any]:
        """The encoder's transformers config as a JSON-able dict (with ``model_type``)."""
        config = cast("PretrainedConfig", self.backbone.config)
        data = config.to_dict()
        data["model_type"] = config.model_type
        for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"):
            data.pop(key, None)
        return data

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def padding_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The library's mask (B, L) bool, True = padding, from a Hugging Face mask (1 = keep)."""
        if attention_mask is None:
            return torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        return padding_from_keep(attention_mask)

    def _check(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        text_padding_mask: torch.Tensor | None,
    ) -> None:
        owner = type(self).__name__
        check_rank(owner, "input_ids", input_ids, "(B, L)")
        if input_ids.is_floating_point():
            raise ValueError(f"{owner}: `input_ids` must be integer token ids; got dtype {input_ids.dtype}.")
        if int(input_ids.shape[1]) > self.max_tokens:
            raise ValueError(
                f"{owner}: got {int(input_ids.shape[1])} tokens but max_tokens={self.max_tokens}. Tokenize with "
                f"max_length={self.max_tokens}, truncation=True, padding='max_length' (the field's protocol), "
                "or raise `max_tokens` in the text config."
            )
        if attention_mask is not None and text_padding_mask is not None:
            raise ValueError(
                f"{owner}: pass either `attention_mask` (Hugging Face, 1 = keep) or `text_padding_mask` "
                "(bool, True = padding), not both."
            )
        if attention_mask is not None:
            check_rank(owner, "attention_mask", attention_mask, "(B, L)")
            check_same_batch(owner, [("input_ids", input_ids), ("attention_mask", attention_mask)])
            if attention_mask.dtype == torch.bool:
                raise ValueError(
                    f"{owner}: `attention_mask` is a bool tensor, which is ambiguous: the Hugging Face mask "
                    "means 1 = keep, the library's mask True = padding. Pass the tokenizer's integer "
                    "attention_mask, or the library's mask as `text_padding_mask=`."
                )
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"{owner}: `attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}; "
                    f"got {tuple(attention_mask.shape)}."
                )
        if text_padding_mask is not None:
            check_rank(owner, "text_padding_mask", text_padding_mask, "(B, L)")
            if text_padding_mask.dtype != torch.bool or tuple(text_padding_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"{owner}: `text_padding_mask` must be a bool tensor (True = padding) of shape "
                    f"{tuple(input_ids.shape)}; got dtype {text_padding_mask.dtype}, shape "
                    f"{tuple(text_padding_mask.shape)}."
                )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) -> (text (B, L, dim), text_padding_mask (B, L) bool, True = padding)."""
        if checks_enabled(self):
            self._check(input_ids, attention_mask, text_padding_mask)
        if text_padding_mask is None:
            text_padding_mask = self.padding_mask(input_ids, attention_mask)  # the one conversion
        grad = contextlib.nullcontext() if not self.freeze else torch.no_grad()
        with grad:
            mask = self.encoder_mask(text_padding_mask)
            hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.proj(hidden), text_padding_mask

    def encoder_mask(self, text_padding_mask: torch.Tensor) -> torch.Tensor:
        """The attention mask handed to the transformers encoder.

        With transformers 5 or later, a prepared additive mask of shape (B, 1, L, L) (0 for a token,
        the dtype's minimum for padding), which the encoder uses as it is: the 2-D keep-mask would make
        it read the mask on the host (``padding_mask.all()``) to decide whether it can drop it, a
        device synchronisation in every forward on a GPU. Older versions get the 2-D keep-mask
        (1 = token). Both give the same hidden states.

        Shapes:
            text_padding_mask: (B, L) bool, True = padding -> (B, 1, L, L) float or (B, L) long
        """
        keep = keep_from_padding(text_padding_mask)
        if not _PREPARED_4D_MASKS:
            return keep.to(torch.long)
        dtype = next(self.backbone.parameters()).dtype
        additive = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
        length = keep.shape[1]
        return additive[:, None, None, :].expand(-1, 1, length, length)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, hidden_dim={self.hidden_dim}, dim={self.dim}, max_tokens={self.max_tokens}, "
            f"freeze={self.freeze}, lr_multiplier={self.lr_multiplier}"
        )
