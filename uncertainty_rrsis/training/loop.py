"""Deprecated: the training loop was split into :mod:`.setup`, :mod:`.trainer` and :mod:`.evaluation`.

Every name it held is importable from :mod:`uncertainty_rrsis.training`; this module forwards
them with a ``DeprecationWarning`` and will be removed in the next release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "Trainer": "trainer",
    "build_model_config": "setup",
    "load_tokenizer": "setup",
    "environment_info": "setup",
    "format_metrics": "evaluation",
    "PROTOCOL": "evaluation",
    "main_guard": "distributed",
}

warnings.warn(
    "uncertainty_rrsis.training.loop is deprecated and will be removed in the next release; import from "
    "uncertainty_rrsis.training instead",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"uncertainty_rrsis.training.loop.{name} is deprecated and will be removed in the next release; use "
        f"uncertainty_rrsis.training.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
