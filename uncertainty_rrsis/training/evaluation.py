"""Evaluation with the field's protocol: one function, usable with or without a Trainer, under DDP.

::

    from uncertainty_rrsis.models import CroBIMU
    from uncertainty_rrsis.training import evaluate, evaluation_loader, format_metrics

    model = CroBIMU.from_pretrained("runs/default/checkpoints/best")
    loader = evaluation_loader(test_set, batch_size=16)          # rank r of w: samples r, r + w, ...
    metrics = evaluate(model, loader, device="cpu")
    print(format_metrics(metrics, title="test"))

Under ``torchrun`` each rank builds the loader with its ``rank`` / ``world_size``; every sample is
scored once and the metric accumulators are summed over the ranks (``sync``), so every rank
returns the numbers of the whole split. Also here: the evaluation with every sentence blanked
(how much the text matters), the final report (``metrics.json``) and the picture panels.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from .._ops import resize_logits
from ..data import collate
from ..metrics import ReferringSegmentationMetrics, UncertaintyQualityMetrics
from .checkpoint import atomic_write_text
from .distributed import ShardedSampler

__all__ = [
    "PROTOCOL",
    "evaluate",
    "evaluation_loader",
    "blank_sentences",
    "forward_batch",
    "unwrap_model",
    "split_names",
    "text_cost",
    "final_report",
    "format_metrics",
    "format_breakdown",
    "format_reliability",
    "write_metrics",
    "save_panels",
]

PROTOCOL = (
    "per-sample IoU = |P and G| / |P or G| (0 when the union is empty); oIoU = sum I / sum U; mIoU = mean IoU; "
    "Pr@t = share of samples with IoU >= t; predictions binarised at probability 0.5 (logit > 0); "
    "every sentence counted once"
)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(compiled := getattr(model, "_orig_mod", None), torch.nn.Module):
            model = compiled
        else:
            return model


def split_names(text: str) -> list[str]:
    """The split names of a comma-separated list such as ``--eval-splits "val,test"`` (blanks dropped)."""
    return [s.strip() for s in text.split(",") if s.strip()]


def evaluation_loader(dataset: Dataset, *, batch_size: int, rank: int = 0, world_size: int = 1,
                      num_workers: int = 0) -> DataLoader:
    """A loader over this rank's share of ``dataset``: indices ``rank, rank + world_size, ...``, no padding.

    Args:
        dataset: a map-style dataset of sample dicts (the readers of :mod:`uncertainty_rrsis.data`).
        batch_size: samples per batch on this rank.
        rank, world_size: the DDP layout (``DistEnv.rank`` / ``world_size``).
        num_workers: DataLoader worker processes.
    """
    sampler = ShardedSampler(len(dataset), rank=rank, world_size=world_size)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=max(1, batch_size), sampler=sampler, collate_fn=collate,
                      num_workers=num_workers)


def blank_sentences(input_ids: torch.Tensor, text_padding_mask: torch.Tensor, *, tokenizer: Any
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty sentence ('[CLS] [SEP]' then padding) in place of every sentence.

    Shapes:
        input_ids: (B, L) long, text_padding_mask: (B, L) bool -> the same shapes.
    """
    empty = tokenizer("", padding="max_length", truncation=True, max_length=input_ids.shape[1], return_tensors="pt")
    blank_ids = empty["input_ids"].to(input_ids.device).expand_as(input_ids).contiguous()
    blank_pad = (empty["attention_mask"] == 0).to(input_ids.device).expand_as(text_padding_mask).contiguous()
    return blank_ids, blank_pad


def forward_batch(model: torch.nn.Module, batch: Mapping[str, Any], *, device: torch.device,
                  autocast_dtype: torch.dtype | None = None, tokenizer: Any = None):
    """Run ``model`` on a collated batch (``image``, ``input_ids``, ``text_padding_mask``).

    With a ``tokenizer`` every sentence is replaced by the empty one first (see
    :func:`blank_sentences`); ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward
    under autocast. Returns what the model returns.
    """
    images = batch["image"].to(device, non_blocking=True)
    ids = batch["input_ids"].to(device, non_blocking=True)
    pad = batch["text_padding_mask"].to(device, non_blocking=True)
    if tokenizer is not None:
        ids, pad = blank_sentences(ids, pad, tokenizer=tokenizer)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with ctx:
        return model(images, ids, text_padding_mask=pad)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Any,
    *,
    device: torch.device | str,
    uncertainty: bool = True,
    at_original_size: bool = False,
    blank_text: bool = False,
    tokenizer: Any = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    description: str = "eval",
    boundary: bool = False,
    tta_scales: Sequence[float] = (),
) -> dict[str, Any]:
    """The field's metrics of ``model`` over ``loader``, summed over DDP ranks.

    Args:
        model: returns a :class:`~uncertainty_rrsis.RiskGuidedOutput`: ``logits`` (B, 1, H, W),
            ``uncertainty`` (B, 1, h, w) on a grid that covers exactly the input image, or None,
            and ``risk`` (B,) or None; e.g. :class:`~uncertainty_rrsis.models.CroBIMU` (plain or
            wrapped in DDP / ``torch.compile``) on inputs whose sides are multiples of its
            ``size_divisor``, as the datasets' ``image_size`` is. Put in eval mode for the loop,
            then back.
        loader: collated batches (:func:`evaluation_loader`; under DDP each rank its share).
        device: where the model runs and the metrics accumulate.
        uncertainty: also score ``U^p`` as a predictor of the error pixels (``unc/...``).
        at_original_size: score at each image's own size (``batch["orig_mask"]``: build the
            dataset with ``return_orig_mask=True``) instead of the input size.
        blank_text: replace every sentence by the empty one (needs ``tokenizer``).
        tokenizer: the tokenizer of the model, for ``blank_text``.
        autocast_dtype: run the forward under autocast with this dtype (None: no autocast).
        progress: show a progress bar.
        description: the progress bar's label.
        boundary: also report ``bIoU``, the mean boundary IoU (overall and per tag).
        tta_scales: test-time augmentation for a baseline sample score, ``tta``: the model is run
            again on the images resized by each factor (e.g. ``(0.75, 1.25)``, sides kept multiples
            of 32); the score is ``1 -`` the mean IoU between those predictions (resized back) and
            the plain one. A change of scale keeps every sentence true (a flip would turn "left"
            into "right").

    Returns:
        ``{"oIoU", "mIoU", "Pr@0.5", ..., "Pr@0.9", "count"}`` (fractions in [0, 1]),
        ``"breakdown"`` (per ``tag=value``) when the samples carry tags, and the ``"unc/..."``
        metrics when ``uncertainty`` and the model outputs an uncertainty map: ``U^p`` and the two
        margin baselines for error pixels, and failure detection per sample
        (:class:`~uncertainty_rrsis.metrics.UncertaintyQualityMetrics`), with
        ``"unc_breakdown"`` (failure detection per ``tag=value``) when the samples carry tags.

    Raises:
        ValueError: the loader gave no sample on any rank (an empty split).
    """
    if blank_text and tokenizer is None:
        raise ValueError("evaluate(blank_text=True) needs tokenizer=: the tokenizer that writes the empty sentence")
    device = torch.device(device)
    seg = ReferringSegmentationMetrics(device=device, at_original_size=at_original_size, boundary=boundary)
    unc = UncertaintyQualityMetrics(device=device) if uncertainty else None
    was_training = model.training
    model.eval()
    iterator: Any = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc=description, unit="batch", leave=False, dynamic_ncols=True)
    for batch in iterator:
        out = forward_batch(model, batch, device=device, autocast_dtype=autocast_dtype,
                            tokenizer=tokenizer if blank_text else None)
        logits = out.logits.float()
        seg.update_from_batch(logits, batch)
        if unc is not None and out.uncertainty is not None:
            extra = {"tta": _tta_disagreement(model, batch, logits, tta_scales, device=device,
                                              autocast_dtype=autocast_dtype)} if tta_scales else None
            unc.update_from_batch(out.uncertainty.float(), logits, batch, coarse_logits=out.coarse_logits,
                                  risk=out.risk, quality=out.quality, error_map=out.error_map, sample_scores=extra)
    model.train(was_training)
    seg.sync()
    result: dict[str, Any] = dict(seg.compute())
    if result["count"] == 0:  # the same on every rank: the count is summed over them
        dataset = getattr(loader, "dataset", None)
        what = ""
        root = getattr(dataset, "root", None)
        if root is not None:
            what = f" (the {getattr(dataset, 'split', '?')} split under {root})"
        raise ValueError(f"evaluate: the loader gave no samples{what}, on any rank; metrics over no samples would be "
                         "meaningless. Check that the split holds samples.")
    breakdown = seg.compute_breakdown()
    if breakdown:
        result["breakdown"] = breakdown
    if unc is not None:
        unc.sync()  # on every rank, also one that saw no batch
        if float(unc.histograms().sum()) > 0:  # a model without an uncertainty map adds nothing
            result.update({f"unc/{k}": v for k, v in unc.compute().items()})
            unc_breakdown = unc.compute_breakdown()
            if unc_breakdown:
                result["unc_breakdown"] = unc_breakdown
            reliability = unc.reliability()
            if reliability:
                result["unc_reliability"] = reliability
    return result


def _tta_disagreement(model: torch.nn.Module, batch: Mapping[str, Any], logits: torch.Tensor,
                      scales: Sequence[float], *, device: torch.device,
                      autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """``1 -`` the mean IoU between the predictions at each scale of ``scales`` and ``logits > 0`` (B,)."""
    height, width = batch["image"].shape[-2:]
    pred = logits[:, 0] > 0
    ious = []
    for scale in scales:
        size = [max(32, int(round(side * scale / 32)) * 32) for side in (height, width)]
        scaled = dict(batch)
        scaled["image"] = torch.nn.functional.interpolate(batch["image"].float(), size=size, mode="bilinear",
                                                          align_corners=False)
        other = forward_batch(model, scaled, device=device, autocast_dtype=autocast_dtype).logits.float()
        other_pred = resize_logits(other, logits.shape[-2:])[:, 0] > 0
        inter = (other_pred & pred).flatten(1).sum(1).double()
        union = (other_pred | pred).flatten(1).sum(1).double()
        ious.append(torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union)))
    return 1.0 - torch.stack(ious).mean(0)


def format_metrics(metrics: Mapping[str, Any], *, title: str = "") -> str:
    """A small fixed-width table of oIoU / mIoU / Pr@t (percent) and the uncertainty metrics,
    ``U^p`` next to the margin baselines."""
    keys = [k for k in ("oIoU", "mIoU", "Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9") if k in metrics]
    head = " ".join(f"{k:>7s}" for k in keys)
    row = " ".join(f"{100 * metrics[k]:7.2f}" for k in keys)
    lines = [title] if title else []
    lines += [head, row]
    if "unc/AUROC" in metrics:
        lines.append(format_uncertainty(metrics))
    if "count" in metrics:
        lines.append(f"samples: {int(metrics['count'])}")
    return "\n".join(lines)


def format_uncertainty(metrics: Mapping[str, Any]) -> str:
    """The uncertainty metrics (``unc/...``) as two small tables: error pixels, failed samples."""

    def value(key: str) -> str:
        x = metrics.get(key)
        return f"{'-':>12s}" if x is None or x != x else f"{x:12.3f}"

    def row(name: str, keys: Sequence[str]) -> str:
        return f"  {name:<36s}" + "".join(value(k) for k in keys)

    pixels = int(metrics.get("unc/pixels", 0))
    lines = [f"error pixels: {100 * metrics.get('unc/error_rate', 0.0):.2f} % of {pixels}",
             f"  {'score':<36s}{'AUROC':>12s}{'AUPRC':>12s}{'caught@10%':>12s}"]
    for prefix, name in (("", "U^p (RUS)"), ("margin/", "margin of P"), ("margin_pooled/", "margin on U's grid"),
                         ("error_map/", "pixel risk head")):
        if f"unc/{prefix}AUROC" in metrics:
            lines.append(row(name, [f"unc/{prefix}{k}" for k in ("AUROC", "AUPRC", "caught@10%")]))
    if "unc/outcome/TP/u_mean" in metrics:
        outcomes = ("TP", "FP", "FN", "TN")
        lines += [f"  {'mean over the pixels that are':<36s}" + "".join(f"{k:>8s}" for k in outcomes)]
        for key, name in (("u_mean", "U^p"), ("margin_mean", "margin of P")):
            cells = [metrics.get(f"unc/outcome/{k}/{key}") for k in outcomes]
            lines.append(f"  {name:<36s}" + "".join(f"{'-':>8s}" if c is None or c != c else f"{c:8.3f}"
                                                      for c in cells))
    if "unc/failure/count" in metrics:
        lines += [f"failed samples (IoU < 0.5): {100 * metrics['unc/failure/rate']:.1f} % of "
                  f"{int(metrics['unc/failure/count'])}",
                  f"  {'score':<36s}{'AUROC':>12s}{'AUPRC':>12s}{'AURC':>12s}"]
        scores = [k.split("/")[2] for k in metrics if k.startswith("unc/failure/") and k.endswith("/AUROC")]
        for key in scores:
            name = SAMPLE_SCORE_NAMES.get(key, key)
            lines.append(row(name, [f"unc/failure/{key}/{k}" for k in ("AUROC", "AUPRC", "AURC")]))
        lines.append(row("oracle / random order", ["", "unc/failure/oracle/AURC", "unc/failure/random/AURC"]))
    if "unc/quality/MAE" in metrics:
        lines.append(f"predicted IoU: mean absolute error {metrics['unc/quality/MAE']:.3f} (a constant: "
                     f"{metrics['unc/quality/MAE_constant']:.3f}), bias {metrics['unc/quality/bias']:+.3f}")
    return "\n".join(lines)


#: How the report names each sample score.
SAMPLE_SCORE_NAMES = {
    "u_mask": "mean U^p over the predicted mask",
    "u_image": "mean U^p over the image",
    "u_outside": "mean U^p outside the predicted mask",
    "margin": "mean margin over the predicted mask",
    "disagreement": "coarse vs final, 1 - IoU",
    "risk": "risk head: failure probability",
    "quality": "risk head: 1 - predicted IoU",
    "tta": "test-time scales, 1 - IoU",
}


def format_reliability(table: Sequence[Mapping[str, float]]) -> str:
    """The reliability table of a predicted IoU (:meth:`UncertaintyQualityMetrics.reliability`)."""
    lines = [f"  {'predicted IoU':<16s}{'samples':>9s}{'mean predicted':>16s}{'mean actual':>13s}"]
    for row in table:
        lines.append(f"  {row['from']:.1f}-{row['to']:.1f}{'':<9s}{int(row['count']):>9d}{row['predicted']:16.3f}"
                     f"{row['actual']:13.3f}")
    return "\n".join(lines)


def format_breakdown(metrics: Mapping[str, Any]) -> str:
    """One line per tag group of ``metrics["breakdown"]``: mIoU, oIoU (percent) and sample count.

    When ``metrics["unc_breakdown"]`` has the group, the line goes on with the share of failed
    samples (IoU < 0.5) and the AUROC with which the mean ``U^p`` over the predicted mask and the
    mean margin (and the risk head, when the model has one) detect them ("-" where a group has only
    failures or none).
    """

    def auroc(values: Mapping[str, Any], score: str) -> str:
        value = values.get(f"failure/{score}/AUROC")
        return "  -  " if value is None or value != value else f"{value:.3f}"

    lines = []
    unc = metrics.get("unc_breakdown", {})
    for group, values in sorted(metrics.get("breakdown", {}).items()):
        line = (f"  {group:28s} mIoU {100 * values['mIoU']:6.2f}  oIoU {100 * values['oIoU']:6.2f}  "
                f"n={int(values['count'])}")
        if group in unc:
            u = unc[group]
            line = (f"{line:70s} failed {100 * u['failure/rate']:5.1f} %  fail AUROC U^p {auroc(u, 'u_mask')}"
                    f"  margin {auroc(u, 'margin')}")
            if "failure/risk/AUROC" in u:
                line += f"  risk head {auroc(u, 'risk')}"
        lines.append(line)
    return "\n".join(lines)


def text_cost(split: str, results: Mapping[str, Any], masked: Mapping[str, Any]) -> str:
    """The sentence reporting how many mIoU points the text is worth on ``split``."""
    return (f"{split} with the text masked out: mIoU {100 * masked['mIoU']:.2f} "
            f"(text costs {100 * (results['mIoU'] - masked['mIoU']):.2f} mIoU points)")


def final_report(results: Mapping[str, Any], *, checkpoint: str, image_size: int, seed: int, steps: int,
                 train_config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's ``metrics.json`` holds: the results with the protocol, resolution, seed, steps,
    training settings and environment they were measured under."""
    from .setup import environment_info

    return {"checkpoint": checkpoint, "protocol": PROTOCOL, "resolution": f"{image_size}x{image_size}",
            "seed": seed, "steps": steps, "results": dict(results), "train_config": dict(train_config),
            "environment": environment_info()}


def write_metrics(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write a report (``metrics.json``, ``eval_<split>.json``) as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    return path


@torch.no_grad()
def save_panels(model: torch.nn.Module, dataset: Any, folder: str | Path, *, split: str, count: int,
                device: torch.device | str, autocast_dtype: torch.dtype | None = None) -> list[Path]:
    """Draw the first ``count`` samples of ``dataset`` (a fixed set) as PNG panels.

    Each panel ``<folder>/<split>_<index>.png`` shows the image, the ground truth, the
    prediction, ``U^p`` and UDLR's mask ``M`` (see :func:`uncertainty_rrsis.viz.save_panel`).
    Leaves the model in eval mode. Returns the paths written.
    """
    from ..viz import save_panel

    device = torch.device(device)
    folder = Path(folder)
    paths = []
    model.eval()
    for index in range(min(count, len(dataset))):
        batch = collate([dataset[index]])
        out = forward_batch(model, batch, device=device, autocast_dtype=autocast_dtype)
        size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
        logits = out.logits.float()[0, 0]
        if out.uncertainty is not None:
            prob = torch.sigmoid(resize_logits(out.uncertainty.float(), size))[0, 0]
        else:
            prob = torch.zeros(size)
        refine = None
        if out.refine_mask is not None:
            refine = resize_logits(out.refine_mask.float(), size)[0, 0]
        path = folder / f"{split}_{index:03d}.png"
        save_panel(path, image=batch["image"][0], sentence=batch["sentence"][0], target=batch["mask"][0],
                   prediction=(logits > 0).cpu(), uncertainty_prob=prob.cpu(),
                   refine_mask=None if refine is None else refine.cpu())
        paths.append(path)
    return paths
