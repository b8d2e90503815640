"""RiskGuidedDecoder: add RUS, UGF and UDLR around any referring-segmentation decoder.

Data flow (paper Fig. 2)::

    features[-1] --RUS--> U
    features[i] --UGF(U)--> features[i]      for i in fused_levels   (one shared UGF)
    decoder(features, text, mask) --> P_fg (and F)
    UDLR(F, P_fg, U) --> P_ref

Axis legend
    b: batch   c: feature width (``dim``)   l: text tokens   h, w: spatial
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_channels, check_padding_mask, check_rank, check_same_batch, checks_enabled
from .modules import ReferringUncertaintyScorer, UncertaintyDrivenRefinement, UncertaintyGatedFusion

__all__ = ["RiskGuidedDecoder", "RiskGuidedOutput"]


class RiskGuidedOutput(NamedTuple):
    """What :class:`RiskGuidedDecoder` returns (a NamedTuple, so it passes through ``torch.compile``).

    Attributes:
        logits: (B, 1, H, W) refined logits ``P_ref``, or the coarse ones when refinement is off.
        coarse_logits: (B, 1, H, W) the decoder's logits ``P_fg``.
        uncertainty: (B, 1, H32, W32) uncertainty logits ``U``, or None when RUS is absent (Base).
        refine_mask: (B, 1, H, W) the soft refinement mask ``M``, or None when refinement is off.
    """

    logits: torch.Tensor
    coarse_logits: torch.Tensor
    uncertainty: torch.Tensor | None
    refine_mask: torch.Tensor | None


class RiskGuidedDecoder(nn.Module):
    """Wraps a referring-segmentation decoder with the CroBIM-U uncertainty modules.

    The decoder is any module called as ``decoder(features, text, text_padding_mask)`` that
    returns either ``(coarse_logits, mask_feature)`` or ``coarse_logits`` alone. In the second
    case, name the submodule whose output is the high-resolution feature ``F`` with
    ``mask_feature_from="dotted.name"``: a forward hook captures it and the decoder is left
    untouched.

    With ``use_fusion=False, use_refinement=False`` (the paper's Base row) the wrapper adds no
    module and returns exactly what the bare decoder returns.

    Args:
        decoder: the user's decoder.
        dim: channels of every feature level (and of the text unless ``text_dim`` is given).
        text_dim: width of ``text``; defaults to ``dim``.
        fused_levels: indices into ``features`` that UGF updates before the decoder sees them.
        mask_feature_dim: channels of ``F``; defaults to ``dim``.
        mask_feature_from: dotted name of the decoder submodule whose output is ``F``.
        use_fusion: add UGF (Eq. 9-12).
        use_refinement: add UDLR (Eq. 13-16).
        num_heads: heads of UGF's attention.
        refine_hidden_dim: hidden width of UDLR's head.
        fusion_kwargs, refinement_kwargs, scorer_kwargs: extra keyword options of the modules.

    Attributes:
        dim (int): channels of every feature level.
        text_dim (int): width of ``text``.
        mask_feature_dim (int): channels of the mask feature ``F``.
        fused_levels (tuple[int, ...]): the levels the shared UGF updates.
        scorer (ReferringUncertaintyScorer or None): RUS; None when both modules are off (Base).
        fusion (UncertaintyGatedFusion or None): the shared UGF; None when ``use_fusion=False``.
        refinement (UncertaintyDrivenRefinement or None): UDLR; None when ``use_refinement=False``.

    Shapes:
        - features: list of (B, dim, H_i, W_i), finest first; the last is the one RUS scores
        - text: (B, L, text_dim)
        - text_padding_mask: (B, L) bool, True = padding; or None
        - output: :class:`RiskGuidedOutput`
    """

    def __init__(
        self,
        decoder: nn.Module,
        dim: int,
        *,
        text_dim: int | None = None,
        fused_levels: Sequence[int] = (1, 2, 3),
        mask_feature_dim: int | None = None,
        mask_feature_from: str | None = None,
        use_fusion: bool = True,
        use_refinement: bool = True,
        num_heads: int = 8,
        refine_hidden_dim: int = 64,
        scorer_kwargs: dict | None = None,
        fusion_kwargs: dict | None = None,
        refinement_kwargs: dict | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.decoder = decoder
        self.dim = int(dim)
        self.text_dim = int(text_dim) if text_dim is not None else self.dim
        self.mask_feature_dim = int(mask_feature_dim) if mask_feature_dim is not None else self.dim
        self.fused_levels = tuple(int(i) for i in fused_levels)
        self.use_fusion = bool(use_fusion)
        self.use_refinement = bool(use_refinement)
        self.mask_feature_from = mask_feature_from

        self.scorer = (
            ReferringUncertaintyScorer(self.dim, text_dim=self.text_dim, **(scorer_kwargs or {}), **factory)
            if (self.use_fusion or self.use_refinement)
            else None
        )
        self.fusion = (
            UncertaintyGatedFusion(
                self.dim, text_dim=self.text_dim, num_heads=num_heads, **(fusion_kwargs or {}), **factory
            )
            if self.use_fusion
            else None
        )
        self.refinement = (
            UncertaintyDrivenRefinement(
                self.mask_feature_dim, hidden_dim=refine_hidden_dim, **(refinement_kwargs or {}), **factory
            )
            if self.use_refinement
            else None
        )

        self._captured: list[torch.Tensor] = []
        self._hook_handle = None
        if mask_feature_from is not None:
            try:
                target = decoder.get_submodule(mask_feature_from)
            except AttributeError as err:
                names = [n for n, _ in decoder.named_modules() if n]
                parent = mask_feature_from.rsplit(".", 1)[0]
                near = [n for n in names if n.startswith(parent + ".")] or names
                raise ValueError(
                    f"RiskGuidedDecoder: mask_feature_from={mask_feature_from!r} names no submodule of the "
                    f"decoder ({type(decoder).__name__}). Submodules it has: {near[:20]}."
                ) from err
            self._hook_handle = target.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: object, output: object) -> None:
        self._captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    def _check(self, features, text, text_padding_mask) -> None:
        owner = type(self).__name__
        if not isinstance(features, (list, tuple)) or len(features) == 0:
            raise ValueError(
                f"{owner}: `features` must be a non-empty list of (B, dim, H, W) maps, finest first; "
                f"got {type(features).__name__}."
            )
        for i, feat in enumerate(features):
            check_rank(owner, f"features[{i}]", feat, "(B, C, H, W)")
            check_channels(owner, f"features[{i}]", feat, self.dim, dim=1, layout="(B, C, H, W)",
                           fix="Project every level to `dim` channels before the wrapper.")
        bad = [i for i in self.fused_levels if not -len(features) <= i < len(features)]
        if self.use_fusion and bad:
            raise ValueError(
                f"{owner}: fused_levels {self.fused_levels} index beyond the {len(features)} feature levels given."
            )
        check_rank(owner, "text", text, "(B, L, D)")
        check_channels(owner, "text", text, self.text_dim, dim=2, layout="(B, L, D)")
        check_same_batch(owner, [*((f"features[{i}]", f) for i, f in enumerate(features)), ("text", text)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def _run_decoder(self, features, text, text_padding_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._captured.clear()
        out = self.decoder(features, text, text_padding_mask)
        if isinstance(out, (tuple, list)):
            coarse, mask_feature = out[0], (out[1] if len(out) > 1 else None)
        else:
            coarse, mask_feature = out, None
        if mask_feature is None and self._captured:
            mask_feature = self._captured[-1]
        self._captured.clear()
        return coarse, mask_feature

    def forward(
        self,
        features: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> RiskGuidedOutput:
        """Run RUS -> UGF -> decoder -> UDLR; see the class docstring for shapes."""
        if checks_enabled():
            self._check(features, text, text_padding_mask)
        features = list(features)
        uncertainty = None
        if self.scorer is not None:
            uncertainty = self.scorer(features[-1], text, text_padding_mask)
        if self.fusion is not None and self.fused_levels:
            # one call for all shared levels: one token sequence, one attention (see fuse_levels)
            fused = self.fusion([features[i] for i in self.fused_levels], text, uncertainty, text_padding_mask)
            for i, level in zip(self.fused_levels, fused):
                features[i] = level
        coarse, mask_feature = self._run_decoder(features, text, text_padding_mask)
        if checks_enabled():
            check_rank(type(self).__name__, "decoder output coarse_logits", coarse, "(B, 1, H, W)")
            check_channels(type(self).__name__, "decoder output coarse_logits", coarse, 1, dim=1,
                           layout="(B, 1, H, W)", fix="The decoder must return one foreground logit map.")
        if self.refinement is None:
            return RiskGuidedOutput(coarse, coarse, uncertainty, None)
        if mask_feature is None:
            raise ValueError(
                f"RiskGuidedDecoder: the decoder ({type(self.decoder).__name__}) returned only coarse logits, so "
                "UDLR has no mask feature F. Either return (coarse_logits, mask_feature) from the decoder, or "
                "pass mask_feature_from='<dotted submodule name>' naming the layer whose output is F, or set "
                "use_refinement=False."
            )
        assert uncertainty is not None
        logits, refine_mask = self.refinement.refine(mask_feature, coarse, uncertainty)
        return RiskGuidedOutput(logits, coarse, uncertainty, refine_mask)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, text_dim={self.text_dim}, fused_levels={self.fused_levels}, "
            f"use_fusion={self.use_fusion}, use_refinement={self.use_refinement}"
        )
