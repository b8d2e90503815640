"""Rankings of a score against outcomes: AUROC, average precision, the risk-coverage curve.

Exact per-sample versions (:func:`binary_auroc`, :func:`average_precision`, :func:`risk_coverage`)
and the histogram version the pixel metrics use (``_ranking``).

Axis letters: N samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["binary_auroc", "average_precision", "risk_coverage"]


def _ranking(err: torch.Tensor, ok: torch.Tensor, top_fractions: Sequence[float]) -> dict[str, float]:
    """AUROC, AUPRC and caught@k from two histograms over score bins (most uncertain bin first)."""
    n_err, n_ok = float(err.sum()), float(ok.sum())
    total = n_err + n_ok
    out: dict[str, float] = {}
    if n_err > 0 and n_ok > 0:
        tp = torch.cat([torch.zeros(1, dtype=torch.float64), err.cumsum(0)])
        fp = torch.cat([torch.zeros(1, dtype=torch.float64), ok.cumsum(0)])
        tpr, fpr = tp / n_err, fp / n_ok
        out["AUROC"] = float(torch.trapezoid(tpr, fpr))
        mask = err > 0
        precision = tp[1:] / (tp[1:] + fp[1:]).clamp_min(1e-300)
        out["AUPRC"] = float(((err / n_err) * precision)[mask].sum())
    else:
        out["AUROC"] = float("nan")
        out["AUPRC"] = float("nan")
    both = err + ok
    cum = both.cumsum(0)
    cum_err = err.cumsum(0)
    bins = err.numel()
    for frac in top_fractions:
        key = f"caught@{frac * 100:g}%"
        if n_err == 0:
            out[key] = float("nan")
            continue
        budget = frac * total
        k = int(torch.searchsorted(cum, torch.tensor([budget], dtype=torch.float64)).item())
        k = min(k, bins - 1)
        before = float(cum[k - 1]) if k > 0 else 0.0
        err_before = float(cum_err[k - 1]) if k > 0 else 0.0
        share = (budget - before) / float(both[k]) if float(both[k]) > 0 else 0.0
        out[key] = (err_before + share * float(err[k])) / n_err
    return out


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact AUROC of ``scores`` for ``labels`` (ties count one half); NaN without both classes.

    Shapes:
        scores: (N,) float;  labels: (N,) bool, True = positive (e.g. a failed sample).
    """
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with mid-ranks for ties
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    first = counts.cumsum(0) - counts  # 0-based position of each distinct value's first sample
    rank_of = (first + (counts + 1) / 2.0).double()[inverse]  # 1-based mid-rank of every sample
    u = float(rank_of[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of ``scores`` for ``labels`` (tied scores enter together); NaN without positives.

    Shapes:
        scores: (N,) float;  labels: (N,) bool.
    """
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    pos = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, labels.double()).flip(0)
    all_ = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(scores)).flip(0)
    tp, seen = pos.cumsum(0), all_.cumsum(0)
    return float(((pos / n_pos) * (tp / seen)).sum())


def risk_coverage(scores: torch.Tensor, risk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The risk-coverage curve of selective prediction and its area (AURC).

    Samples are kept in order of increasing ``scores`` (the most confident first); at coverage
    ``k / N`` the risk is the mean ``risk`` of the ``k`` kept samples. AURC is the mean of the
    risks over k = 1..N (lower is better; sorting by the true risk gives the smallest possible).

    Shapes:
        scores, risk: (N,) float -> coverage (N,), risk curve (N,), AURC float.
    """
    scores, risk = scores.double().flatten(), risk.double().flatten()
    if scores.numel() == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), float("nan")
    order = torch.argsort(scores, stable=True)
    n = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    curve = risk[order].cumsum(0) / n
    return n / scores.numel(), curve, float(curve.mean())
