"""The look-alikes of the field's decoders (``examples/field_decoders.py``) for the benchmarks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def field_decoders() -> ModuleType:
    """``examples/field_decoders.py`` as a module (imported once per process)."""
    name = "field_decoders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
