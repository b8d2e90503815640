"""RiskGuidedDecoder: add RUS, UGF and UDLR around a referring-segmentation decoder you already have.

Data flow (the framework of the paper's Fig. 1)::

    features[score_level] --RUS--> U          (score_level -1: the coarsest level, as in the paper)
    features[i] --UGF(U)--> features[i]              for i in fused_levels
      or: output of decoder.<name> --UGF(U)--> ...   for name in fuse_at (forward hooks)
    call(decoder, features, text, mask) --unpack--> P_fg (and F)
    UDLR(F, P_fg, U) --> P_ref

The decoder's code is never changed: ``call`` maps the wrapper's arguments onto the decoder's
signature, ``unpack`` maps its output onto ``P_fg`` (and ``F``), and forward hooks reach inside
it (``fuse_at`` for UGF, ``mask_feature_from`` for ``F``). The hooks act only while the wrapper
runs the decoder; called on its own, the decoder computes exactly what it computed before.

Axis legend
    b: batch   c: feature width (``dim`` or ``dim[i]``)   l: text tokens   h, w: spatial
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from ._contracts import check_channels, check_padding_mask, check_rank, check_same_batch, checks_enabled, trust_inputs
from ._ops import resize_logits
from .modules import (
    PixelRiskHead,
    ReferringUncertaintyScorer,
    SampleRiskHead,
    UncertaintyDrivenRefinement,
    UncertaintyGatedFusion,
)
from .recipes import DecoderRecipe, get_recipe

__all__ = ["RiskGuidedDecoder", "RiskGuidedOutput"]

DecoderCall = Callable[[nn.Module, list, torch.Tensor, "torch.Tensor | None"], Any]
DecoderUnpack = Callable[[Any], "torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]"]


class RiskGuidedOutput(NamedTuple):
    """What :class:`RiskGuidedDecoder` (and the reference model) returns; a NamedTuple, so it passes
    through ``torch.compile`` and ``torch.export``. Parts a model does not have are None.

    Attributes:
        logits: (B, 1, H, W) refined logits ``P_ref``, or the coarse ones when refinement is off.
        coarse_logits: (B, 1, H, W) the decoder's foreground logits ``P_fg``.
        uncertainty: (B, 1, H32, W32) uncertainty logits ``U``, or None when RUS is absent (Base).
        refine_mask: (B, 1, H, W) the soft refinement mask ``M``, or None when refinement is off.
        risk: (B,) failure logits of the :class:`~uncertainty_rrsis.modules.SampleRiskHead` (an
            option beyond the paper; ``sigmoid(risk)`` estimates the probability that IoU < 0.5),
            or None without it.
        quality: (B,) IoU logits of the same head (``sigmoid(quality)`` is the predicted IoU), or
            None without it.
        error_map: (B, 1, h, w) error logits of the :class:`~uncertainty_rrsis.modules.PixelRiskHead`
            on the mask feature's grid (``sigmoid`` = the probability that the prediction is wrong
            there), or None without it.
    """

    logits: torch.Tensor
    coarse_logits: torch.Tensor
    uncertainty: torch.Tensor | None = None
    refine_mask: torch.Tensor | None = None
    risk: torch.Tensor | None = None
    quality: torch.Tensor | None = None
    error_map: torch.Tensor | None = None


def _default_call(decoder: nn.Module, features: list, text: torch.Tensor, text_padding_mask):
    return decoder(features, text, text_padding_mask)


def _default_unpack(raw: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(raw, (tuple, list)):
        return raw[0], (raw[1] if len(raw) > 1 else None)
    return raw, None


def _submodule(decoder: nn.Module, name: str, argument: str) -> nn.Module:
    """``decoder.get_submodule(name)``, or a ValueError that lists the names closest to ``name``."""
    try:
        return decoder.get_submodule(name)
    except AttributeError as err:
        names = [n for n, _ in decoder.named_modules() if n]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        near = difflib.get_close_matches(name, names, n=8, cutoff=0.4)
        near += [n for n in names if parent and n.startswith(parent + ".") and n not in near]
        shown = (near or names)[:20]
        raise ValueError(
            f"RiskGuidedDecoder: {argument}={name!r} names no submodule of the decoder "
            f"({type(decoder).__name__}). Nearby names: {shown}."
        ) from err


class RiskGuidedDecoder(nn.Module):
    """Wraps a referring-segmentation decoder with the CroBIM-U uncertainty modules.

    RUS scores the last (coarsest) feature level against the text (or ``score_level``) and gives
    the uncertainty logits ``U``; UGF injects language into visual maps, gated by ``U``; the decoder runs; UDLR
    corrects its foreground logits where ``U`` is high. The decoder is used as it is:

    * ``call(decoder, features, text, text_padding_mask)`` runs it (default
      ``decoder(features, text, text_padding_mask)``). For a LAVT / RMSIN decoder,
      :func:`~uncertainty_rrsis.adapters.call_coarsest_first` gives ``decoder(f[3], f[2], f[1], f[0])``;
      for a decoder that wants a Hugging Face keep-mask,
      :func:`~uncertainty_rrsis.adapters.call_with_keep_mask`.
    * ``unpack(raw_output)`` returns ``coarse_logits`` or ``(coarse_logits, mask_feature)``
      (default: a tuple / list gives its first two items, a tensor is the logits). Two-class
      logits convert with :func:`~uncertainty_rrsis.adapters.foreground_logit`.
    * When the decoder does not return ``F``, ``mask_feature_from="dotted.name"`` takes it from
      the output of that submodule with a forward hook.

    UGF goes in one of two places:

    * ``fused_levels`` (default ``(1, 2, 3)``): the wrapper updates those entries of ``features``
      before the decoder sees them. With per-level widths each fused level has a UGF of its own
      width; one shared UGF when their widths are equal (as in the paper).
    * ``fuse_at=("input_convs.0", ...)``: the outputs of those decoder submodules (the decoder's
      own projections of the levels to its internal width ``fusion_dim``) are updated by one
      shared UGF through forward hooks, once, before decoding (one UGF per name when
      ``fusion_dim`` gives different widths). ``features`` then reach the decoder unchanged.

    For the field's published decoders, :meth:`from_recipe` fills in ``call``, ``unpack``,
    ``fuse_at``, ``fusion_dim`` and ``mask_feature_from`` by name (see
    :mod:`uncertainty_rrsis.recipes`).

    At initialisation UDLR is the identity and UGF's update is zero, so the fused maps are
    ``LayerNorm(V)`` (Eq. 12; ``fusion_kwargs={"norm": False}`` makes them ``V``). With
    ``use_fusion=False, use_refinement=False`` (the paper's Base row) the wrapper adds no
    parameter and returns exactly what the bare decoder returns through ``call`` / ``unpack``.

    Args:
        decoder: the user's decoder, left unchanged.
        dim: channels of every feature level (an int), or a sequence of per-level widths,
            finest first (e.g. ``(128, 256, 512, 1024)`` for Swin-B).
        text_dim: width of ``text``; defaults to ``dim`` when ``dim`` is an int, required otherwise.
        fused_levels: indices into ``features`` that UGF updates (default ``(1, 2, 3)``, or none
            when ``fuse_at`` is given).
        score_level: the entry of ``features`` RUS scores: ``-1``, the coarsest (stride 32), as in
            the paper; a finer level gives ``U`` more cells (an option beyond the paper).
        fuse_at: dotted names of decoder submodules whose outputs UGF updates through hooks.
        fusion_dim: channels of the ``fuse_at`` outputs: one int for all, or one per name;
            defaults to ``dim`` when it is an int.
        call: ``callable(decoder, features, text, text_padding_mask) -> raw output``.
        unpack: ``callable(raw output) -> coarse_logits | (coarse_logits, mask_feature)``.
        mask_feature_dim: channels of ``F``; defaults to ``fusion_dim`` if it is one int, else the
            width of the finest level.
        mask_feature_from: dotted name of the decoder submodule whose output is ``F``.
        use_fusion: add UGF (Eq. 9-12).
        use_refinement: add UDLR (Eq. 13-16).
        refine_at: where UDLR runs: ``"feature"``, on the grid of the decoder's logits (stride 4
            in the reference model), upsampling afterwards; or ``"input"``, at ``output_size``
            given to :meth:`forward` (the image size), with ``P_fg`` and ``F`` upsampled first
            (the paper predicts Delta "at full resolution"). ``"input"`` costs about
            ``(output_size / logit grid)^2`` times UDLR's FLOPs.
        risk_head: add a :class:`~uncertainty_rrsis.modules.SampleRiskHead` (an option beyond the
            paper): per sample, a failure logit and a predicted IoU from the predicted object, the
            sentence and the other candidates ``U`` marks (output ``risk`` and ``quality``).
        pixel_risk_head: add a :class:`~uncertainty_rrsis.modules.PixelRiskHead` (an option beyond
            the paper): error logits of the final prediction per pixel (output ``error_map``).
        risk_kwargs: extra keyword options of the risk heads (``hidden_dim``, ``detach``).
        num_heads: heads of UGF's attention (must divide every fused width).
        refine_hidden_dim: hidden width of UDLR's head.
        scorer_kwargs, fusion_kwargs, refinement_kwargs: extra keyword options of the modules.
        device, dtype: factory arguments of the added modules.

    Attributes:
        dim (int or tuple[int, ...]): ``dim`` as given (a tuple for per-level widths).
        level_dims (tuple[int, ...] or None): the per-level widths; None when ``dim`` is an int.
        score_level (int): the entry of ``features`` RUS scores (-1: the last, coarsest one).
        scorer_dim (int): width of the level RUS scores.
        text_dim (int): width of ``text``.
        fusion_dim (int, tuple[int, ...] or None): width of the ``fuse_at`` outputs (a tuple, one
            per name, when they differ).
        mask_feature_dim (int): channels of the mask feature ``F``.
        fused_levels (tuple[int, ...]): the entries of ``features`` UGF updates.
        fuse_at (tuple[str, ...]): the decoder submodules whose outputs UGF updates.
        scorer (ReferringUncertaintyScorer or None): RUS; None when both modules are off (Base).
        fusion (UncertaintyGatedFusion, nn.ModuleList or None): the shared UGF, or one UGF per
            entry of ``fused_levels`` when their widths differ; None when ``use_fusion=False``.
        refinement (UncertaintyDrivenRefinement or None): UDLR; None when ``use_refinement=False``.
        refine_at (str): ``"feature"`` or ``"input"``, where UDLR runs.

    Shapes:
        - features: list of (B, dim[i], H_i, W_i), finest first; RUS scores ``features[score_level]``
        - text: (B, L, text_dim)
        - text_padding_mask: (B, L) bool, True = padding; or None
        - output_size: (H_in, W_in) or None; needed with ``refine_at="input"``
        - output: :class:`RiskGuidedOutput`; logits at the resolution the decoder returns (at
          ``output_size`` for ``logits`` and ``refine_mask`` with ``refine_at="input"``), ``U`` at
          the resolution of ``features[score_level]``
    """

    def __init__(
        self,
        decoder: nn.Module,
        dim: int | Sequence[int],
        *,
        text_dim: int | None = None,
        fused_levels: Sequence[int] | None = None,
        score_level: int = -1,
        fuse_at: Sequence[str] | None = None,
        fusion_dim: int | Sequence[int] | None = None,
        call: DecoderCall | None = None,
        unpack: DecoderUnpack | None = None,
        mask_feature_dim: int | None = None,
        mask_feature_from: str | None = None,
        use_fusion: bool = True,
        use_refinement: bool = True,
        refine_at: str = "feature",
        risk_head: bool = False,
        pixel_risk_head: bool = False,
        risk_kwargs: dict | None = None,
        num_heads: int = 8,
        refine_hidden_dim: int = 64,
        scorer_kwargs: dict | None = None,
        fusion_kwargs: dict | None = None,
        refinement_kwargs: dict | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.decoder = decoder
        self.call = call
        self.unpack = unpack
        self.use_fusion = bool(use_fusion)
        self.use_refinement = bool(use_refinement)
        if refine_at not in ("feature", "input"):
            raise ValueError(f"RiskGuidedDecoder: refine_at must be 'feature' or 'input'; got {refine_at!r}.")
        self.refine_at = refine_at
        self.mask_feature_from = mask_feature_from

        # ---- widths -------------------------------------------------------------------------
        if isinstance(dim, Sequence) and not isinstance(dim, str):
            self.level_dims: tuple[int, ...] | None = tuple(int(d) for d in dim)
            if not self.level_dims:
                raise ValueError("RiskGuidedDecoder: dim is an empty sequence; give one width per feature level.")
            if text_dim is None:
                raise ValueError(
                    f"RiskGuidedDecoder: with per-level widths dim={self.level_dims}, pass text_dim (the width "
                    "of `text`, e.g. 768 for BERT-base): RUS and UGF read the text even when the decoder does not."
                )
            self.dim: int | tuple[int, ...] = self.level_dims
        else:
            self.level_dims = None
            self.dim = int(dim)
        self.score_level = self._level_index(int(score_level), "score_level")
        self.scorer_dim = self._width(self.score_level)
        self.text_dim = int(text_dim) if text_dim is not None else self.scorer_dim
        self.fuse_at = tuple(fuse_at or ())
        if self.fuse_at and fused_levels is not None and bool(tuple(fused_levels)):
            raise ValueError(
                f"RiskGuidedDecoder: pass either fused_levels={tuple(fused_levels)} (UGF on the features before "
                f"the decoder) or fuse_at={self.fuse_at} (UGF inside the decoder), not both."
            )
        self._fuse_widths = self._fusion_widths(fusion_dim)  # one width per fuse_at name
        self.fusion_dim: int | tuple[int, ...] | None = None
        if self._fuse_widths:
            distinct = set(self._fuse_widths)
            self.fusion_dim = self._fuse_widths[0] if len(distinct) == 1 else self._fuse_widths
        if fused_levels is None:
            fused_levels = () if self.fuse_at else (1, 2, 3)
        self.fused_levels = tuple(self._level_index(int(i), "fused_levels") for i in fused_levels)
        if mask_feature_dim is not None:
            self.mask_feature_dim = int(mask_feature_dim)
        elif isinstance(self.fusion_dim, int):
            self.mask_feature_dim = self.fusion_dim
        else:
            self.mask_feature_dim = self.level_dims[0] if self.level_dims is not None else self.scorer_dim

        # ---- the modules ----------------------------------------------------------------------
        self.scorer = (
            ReferringUncertaintyScorer(self.scorer_dim, text_dim=self.text_dim, **(scorer_kwargs or {}), **factory)
            if (self.use_fusion or self.use_refinement)
            else None
        )

        def make_fusion(width: int) -> UncertaintyGatedFusion:
            return UncertaintyGatedFusion(
                width, text_dim=self.text_dim, num_heads=num_heads, **(fusion_kwargs or {}), **factory
            )

        self.fusion: UncertaintyGatedFusion | nn.ModuleList | None = None
        if self.use_fusion:
            widths = list(self._fuse_widths) if self.fuse_at else [self._width(i) for i in self.fused_levels]
            if len(set(widths)) > 1:
                self.fusion = nn.ModuleList(make_fusion(w) for w in widths)
            else:
                self.fusion = make_fusion(widths[0] if widths else self.scorer_dim)
        self.refinement = (
            UncertaintyDrivenRefinement(
                self.mask_feature_dim, hidden_dim=refine_hidden_dim, **(refinement_kwargs or {}), **factory
            )
            if self.use_refinement
            else None
        )
        if (risk_head or pixel_risk_head) and self.scorer is None:
            raise ValueError("RiskGuidedDecoder: the risk heads read U; they need RUS (use_fusion or use_refinement).")
        options = dict(risk_kwargs or {})
        self.risk = (SampleRiskHead(self.mask_feature_dim, self.text_dim, **options, **factory)
                     if risk_head else None)
        pixel_options = {k: v for k, v in options.items() if k != "hidden_dim"}
        self.pixel_risk = PixelRiskHead(self.mask_feature_dim, **pixel_options, **factory) if pixel_risk_head else None
        trust_inputs(self.scorer, self.fusion, self.refinement, self.risk, self.pixel_risk)  # checked at the entry

        # ---- hooks into the decoder: active only while forward() runs the decoder ----------
        self._context: tuple | None = None  # (text, uncertainty, text_padding_mask) during the decoder call
        self._captured: list[torch.Tensor] = []
        self._hook_handles = []
        if mask_feature_from is not None:
            target = _submodule(decoder, mask_feature_from, "mask_feature_from")
            self._hook_handles.append(target.register_forward_hook(self._capture))
        targets = [_submodule(decoder, name, "fuse_at") for name in self.fuse_at]
        if self.fusion is not None:
            for index, (name, target) in enumerate(zip(self.fuse_at, targets)):
                hook = functools.partial(self._fuse_hook, name, index)
                self._hook_handles.append(target.register_forward_hook(hook))

    @classmethod
    def from_recipe(
        cls,
        recipe: str | DecoderRecipe,
        decoder: nn.Module,
        dim: Sequence[int],
        *,
        text_dim: int,
        **overrides: Any,
    ) -> RiskGuidedDecoder:
        """Wrap a published decoder with its named recipe (see :mod:`uncertainty_rrsis.recipes`).

        ``RiskGuidedDecoder.from_recipe("lavt", decoder, (128, 256, 512, 1024), text_dim=768)``
        gives the wrapper the recipe's ``call``, ``unpack``, ``fuse_at``, ``fusion_dim``,
        ``mask_feature_from`` and ``mask_feature_dim``, with the internal widths read off
        ``decoder``. Any keyword argument of the constructor may be added and wins over the
        recipe's; ``fused_levels=`` alone (UGF on the backbone levels instead) drops the recipe's
        ``fuse_at`` and ``fusion_dim``.

        Args:
            recipe: a name in :data:`~uncertainty_rrsis.recipes.RECIPES` or a
                :class:`~uncertainty_rrsis.recipes.DecoderRecipe`.
            decoder: the decoder, as its repository builds it.
            dim: the four backbone widths, finest first (Swin-B: (128, 256, 512, 1024)).
            text_dim: width of the word features (BERT-base: 768).
            overrides: other arguments of :class:`RiskGuidedDecoder`.
        """
        chosen = recipe if isinstance(recipe, DecoderRecipe) else get_recipe(recipe)
        options = chosen.wrapper_options(decoder, dim, text_dim)
        if "fused_levels" in overrides and "fuse_at" not in overrides:
            options.pop("fuse_at", None)
            options.pop("fusion_dim", None)
        return cls(decoder, tuple(dim), text_dim=text_dim, **(options | overrides))

    # ---- construction helpers ----------------------------------------------------------------

    def _level_index(self, index: int, argument: str) -> int:
        """A level index, made non-negative when the number of levels is known (per-level widths)."""
        if self.level_dims is None:
            return index
        n = len(self.level_dims)
        if not -n <= index < n:
            raise ValueError(
                f"RiskGuidedDecoder: {argument} index {index} is outside the {n} levels of dim={self.level_dims}."
            )
        return index % n

    def _width(self, level: int) -> int:
        return self.level_dims[level] if self.level_dims is not None else cast(int, self.dim)  # one int width

    def _fusion_widths(self, fusion_dim: int | Sequence[int] | None) -> tuple[int, ...]:
        """The width of each ``fuse_at`` output: ``fusion_dim`` per name, or one width for all."""
        if not self.fuse_at:
            return ()
        if fusion_dim is None:
            if self.level_dims is not None:
                raise ValueError(
                    f"RiskGuidedDecoder: fuse_at={self.fuse_at} needs fusion_dim, the channels of those "
                    "submodules' outputs (the decoder's internal width)."
                )
            return (self.scorer_dim,) * len(self.fuse_at)
        if isinstance(fusion_dim, Sequence) and not isinstance(fusion_dim, str):
            widths = tuple(int(w) for w in fusion_dim)
            if len(widths) != len(self.fuse_at):
                raise ValueError(
                    f"RiskGuidedDecoder: fusion_dim={widths} gives {len(widths)} widths for the "
                    f"{len(self.fuse_at)} names of fuse_at={self.fuse_at}; give one width per name, or one int."
                )
            return widths
        return (int(fusion_dim),) * len(self.fuse_at)

    # ---- hooks ---------------------------------------------------------------------------------

    def _capture(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._context is not None:
            self._captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    def _fuse_hook(self, name: str, index: int, module: nn.Module, args: tuple[Any, ...], output: Any):
        context = self._context
        if context is None:  # the decoder called on its own: unchanged
            return None
        if checks_enabled(self):
            owner = f"{type(self).__name__} (fuse_at)"
            check_rank(owner, f"output of decoder.{name}", output, "(B, C, H, W)",
                       fix="fuse_at must name submodules that return one NCHW map.")
            check_channels(owner, f"output of decoder.{name}", output, self._fuse_widths[index], dim=1,
                           layout="(B, C, H, W)", fix=f"Pass fusion_dim={int(output.shape[1])} for {name!r}.")
        text, uncertainty, text_padding_mask = context
        assert self.fusion is not None  # the fuse_at hooks exist only with UGF
        fusion = self.fusion[index] if isinstance(self.fusion, nn.ModuleList) else self.fusion
        return fusion(output, text, uncertainty, text_padding_mask)

    # ---- forward -------------------------------------------------------------------------------

    def _check(self, features, text, text_padding_mask) -> None:
        owner = type(self).__name__
        if not isinstance(features, (list, tuple)) or len(features) == 0:
            raise ValueError(
                f"{owner}: `features` must be a non-empty list of (B, C_i, H_i, W_i) maps, finest first; "
                f"got {type(features).__name__}."
            )
        if self.level_dims is not None and len(features) != len(self.level_dims):
            raise ValueError(
                f"{owner}: got {len(features)} feature levels but dim={self.level_dims} gives "
                f"{len(self.level_dims)} widths; pass one map per width, finest first."
            )
        for i, feat in enumerate(features):
            check_rank(owner, f"features[{i}]", feat, "(B, C, H, W)")
            expected = self._width(i)
            if int(feat.shape[1]) != expected:
                source = f"dim[{i}] = {expected}" if self.level_dims is not None else f"dim = {expected}"
                raise ValueError(
                    f"{owner}: `features[{i}]` must have {expected} channels ({source}); got {int(feat.shape[1])} "
                    f"(shape {tuple(feat.shape)}). Give `dim` the widths of your levels, finest first."
                )
        if self.scorer is not None and not -len(features) <= self.score_level < len(features):
            raise ValueError(
                f"{owner}: score_level {self.score_level} is beyond the {len(features)} feature levels given."
            )
        bad = [i for i in self.fused_levels if not -len(features) <= i < len(features)]
        if self.use_fusion and bad:
            raise ValueError(
                f"{owner}: fused_levels {self.fused_levels} index beyond the {len(features)} feature levels given."
            )
        check_rank(owner, "text", text, "(B, L, D)")
        check_channels(owner, "text", text, self.text_dim, dim=2, layout="(B, L, D)",
                       fix=f"Build the wrapper with text_dim={int(text.shape[2])}.")
        check_same_batch(owner, [*((f"features[{i}]", f) for i, f in enumerate(features)), ("text", text)])
        if text_padding_mask is not None:
            check_padding_mask(owner, text_padding_mask, text)

    def _check_decoder_output(self, coarse, mask_feature) -> None:
        owner = type(self).__name__
        fix = "The decoder must give one foreground logit map."
        if isinstance(coarse, torch.Tensor) and coarse.dim() == 4 and coarse.shape[1] == 2:
            fix = ("Two-class logits convert with unpack=uncertainty_rrsis.adapters.foreground_logit "
                   "(foreground minus background).")
        check_rank(owner, "decoder output coarse_logits", coarse, "(B, 1, H, W)",
                   fix="Map the decoder's output with `unpack=`.")
        check_channels(owner, "decoder output coarse_logits", coarse, 1, dim=1, layout="(B, 1, H, W)", fix=fix)
        if self.refinement is not None and mask_feature is not None:
            check_rank(owner, "mask feature F", mask_feature, "(B, C, H, W)")
            check_channels(owner, "mask feature F", mask_feature, self.mask_feature_dim, dim=1,
                           layout="(B, C, H, W)", fix=f"Pass mask_feature_dim={int(mask_feature.shape[1])}.")
            check_same_batch(owner, [("decoder output coarse_logits", coarse), ("mask feature F", mask_feature)])

    def _run_decoder(self, features, text, text_padding_mask, uncertainty):
        """Call the decoder with the hooks live; returns ``(coarse_logits, mask_feature or None)``."""
        self._captured.clear()
        self._context = (text, uncertainty, text_padding_mask)
        try:
            raw = (self.call or _default_call)(self.decoder, features, text, text_padding_mask)
        finally:
            self._context = None
        coarse, mask_feature = _default_unpack((self.unpack or _default_unpack)(raw))
        if mask_feature is None and self._captured:
            mask_feature = self._captured[-1]
        self._captured.clear()
        return coarse, mask_feature

    def _fuse_levels(self, features: list, text, uncertainty, text_padding_mask) -> list:
        indices = [i % len(features) for i in self.fused_levels]
        levels = [features[i] for i in indices]
        assert self.fusion is not None  # called only with UGF
        if isinstance(self.fusion, nn.ModuleList):  # one UGF per width
            fused = [ugf(level, text, uncertainty, text_padding_mask) for ugf, level in zip(self.fusion, levels)]
        else:  # one shared UGF: one call, one token sequence, one attention
            fused = self.fusion(levels, text, uncertainty, text_padding_mask)
        for i, level in zip(indices, fused):
            features[i] = level
        return features

    def forward(
        self,
        features: Sequence[torch.Tensor],
        text: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
        *,
        output_size: Sequence[int] | None = None,
    ) -> RiskGuidedOutput:
        """Run RUS -> UGF -> decoder -> UDLR; see the class docstring for shapes."""
        if checks_enabled(self):
            self._check(features, text, text_padding_mask)
        features = list(features)
        uncertainty = None
        if self.scorer is not None:
            uncertainty = self.scorer(features[self.score_level], text, text_padding_mask)
        if self.fusion is not None and self.fused_levels:
            features = self._fuse_levels(features, text, uncertainty, text_padding_mask)
        coarse, mask_feature = self._run_decoder(features, text, text_padding_mask, uncertainty)
        if checks_enabled(self):
            self._check_decoder_output(coarse, mask_feature)
        if self.refinement is None:
            return self._output(coarse, coarse, uncertainty, None, mask_feature, text, text_padding_mask)
        if mask_feature is None:
            raise ValueError(
                f"RiskGuidedDecoder: the decoder ({type(self.decoder).__name__}) returned only coarse logits, so "
                "UDLR has no mask feature F. Either return (coarse_logits, mask_feature) from the decoder (or from "
                "`unpack`), or pass mask_feature_from='<dotted submodule name>' naming the layer whose output is F, "
                "or set use_refinement=False."
            )
        assert uncertainty is not None
        to_refine = coarse
        if self.refine_at == "input":
            if output_size is None:
                raise ValueError(
                    "RiskGuidedDecoder: refine_at='input' refines at the image size; pass output_size=(H, W) "
                    "to forward()."
                )
            to_refine = resize_logits(coarse, output_size)  # F is resized inside UDLR
        logits, refine_mask = self.refinement.refine(mask_feature, to_refine, uncertainty)
        return self._output(logits, coarse, uncertainty, refine_mask, mask_feature, text, text_padding_mask)

    def _output(self, logits, coarse, uncertainty, refine_mask, mask_feature, text, text_padding_mask
                ) -> RiskGuidedOutput:
        """The output, with the risk heads' estimates when the wrapper has them."""
        if self.risk is None and self.pixel_risk is None:
            return RiskGuidedOutput(logits, coarse, uncertainty, refine_mask)
        if mask_feature is None:
            raise ValueError(
                f"RiskGuidedDecoder: the risk heads read the mask feature F, but the decoder "
                f"({type(self.decoder).__name__}) gave none: return (coarse_logits, mask_feature) or pass "
                "mask_feature_from='<dotted submodule name>'."
            )
        risk = quality = error_map = None
        if self.risk is not None:
            risk, quality = self.risk(mask_feature, logits, coarse, uncertainty, text, text_padding_mask)
        if self.pixel_risk is not None:
            error_map = self.pixel_risk(mask_feature, logits, coarse, uncertainty)
        return RiskGuidedOutput(logits, coarse, uncertainty, refine_mask, risk, quality, error_map)

    def extra_repr(self) -> str:
        where = f"fuse_at={self.fuse_at}, fusion_dim={self.fusion_dim}" if self.fuse_at else (
            f"fused_levels={self.fused_levels}")
        return (
            f"dim={self.dim}, text_dim={self.text_dim}, {where}, mask_feature_dim={self.mask_feature_dim}, "
            f"use_fusion={self.use_fusion}, use_refinement={self.use_refinement}, refine_at={self.refine_at!r}"
        )
