"""Names and small helpers shared by ``benchmarks.latency``, its runner and its sections.

The ablation rows (``VARIANTS``) and the model configs they build (``build_config``), the module
names FLOPs are split by, the padding of the text input, and helpers: logging, autocast, the
log-log exponent fit, error texts without machine paths, and the run's time budget (``Deadline``).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from uncertainty_rrsis.models.tokenizer import scratch_bert_config

VARIANTS: dict[str, tuple[bool, bool]] = {  # name -> (use_fusion, use_refinement)
    "Base": (False, False),
    "+UGF": (True, False),
    "+UDLR": (False, True),
    "Full": (True, True),
}
MODULES = ("RUS", "UGF", "UDLR", "OnlineErrorLoss")
MODULE_PATHS = {  # FlopCounterMode names of the parts of CroBIMU
    "vision": "CroBIMU.vision",
    "text": "CroBIMU.text",
    "decoder": "CroBIMU.decoder.decoder",
    "wrapper": "CroBIMU.decoder",
    "rus": "CroBIMU.decoder.scorer",
    "ugf": "CroBIMU.decoder.fusion",
}
# UDLR runs through RiskGuidedDecoder calling `refinement.refine(...)` (no module hooks fire), so its FLOPs
# are the wrapper's minus the decoder's, RUS's and UGF's (the wrapper does no other counted work).
TEXT_LAYOUTS = {  # random-init text encoders with the presets' layouts: nothing is downloaded
    "paper": {"model_type": "bert"},  # bert-base
    # the small BERT learnt from scratch, with about the vocabulary the synthetic benchmark's tokenizer has (167)
    "tiny": scratch_bert_config(max_tokens=20, vocab_size=200),
}
REAL_TOKENS = 12  # of the 20 token slots, the rest is padding


def now() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def log(msg: str) -> None:
    print(f"[{now()}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- configs


def build_config(preset: str, variant: str):
    """The preset's config for one ablation row, with random-init encoders (no files, no network)."""
    from uncertainty_rrsis.models import (
        CroBIMUConfig,
        DecoderConfig,
        TextConfig,
        VisionConfig,
        get_preset,
    )

    use_fusion, use_refinement = VARIANTS[variant]
    if preset == "micro":  # benchmark-only: the smallest model, for the smoke test
        return CroBIMUConfig(
            vision=VisionConfig(name="convnext_atto", model_kwargs={"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}),
            text=TextConfig(
                name="micro-bert", pretrained=False,
                hf_config={"model_type": "bert", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32},
            ),
            decoder=DecoderConfig(num_layers=1, num_heads=4, num_points=2, ffn_dim=64, num_mask_layers=1),
            dim=32, image_size=64, fusion_heads=4, refine_hidden_dim=16,
            use_fusion=use_fusion, use_refinement=use_refinement,
        )
    return get_preset(
        preset,
        vision={"weights": None, "requires_weights": False},  # random init on purpose: timing needs no weights
        text={"pretrained": False, "hf_config": TEXT_LAYOUTS.get(preset, {"model_type": "bert"})},
        use_fusion=use_fusion,
        use_refinement=use_refinement,
    )


# ------------------------------------------------------------------------------------------- helpers


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
    """Least-squares slope of log(y) vs log(x) (cost ~ x^slope) and its r^2; None below 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    slope = sxy / sxx
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    ss_res = sum((p[1] - (my + slope * (p[0] - mx))) ** 2 for p in pts)
    return {"exponent": slope, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, "points": len(pts)}


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


_ROOT = str(Path(__file__).resolve().parents[1])


def sanitize(text: str) -> str:
    """No machine paths in the results: the repository root becomes ``.``, site-packages ``<site-packages>``."""
    text = text.replace(_ROOT + os.sep, "").replace(_ROOT, ".")
    return re.sub(r"[^\s\"']*/site-packages/", "<site-packages>/", text)


def short_error(err: BaseException, limit: int = 600) -> str:
    text = sanitize(f"{type(err).__name__}: {err}")
    return text if len(text) <= limit else text[:limit] + " ..."


class Deadline:
    """The run's time budget (``--time-budget``; None = no limit), counted from construction."""

    def __init__(self, budget_s: float | None) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()
