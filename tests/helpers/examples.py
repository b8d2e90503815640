"""The programs behind ``examples/`` as modules, for tests that call their functions.

``train``, ``evaluate``, ``predict`` and ``export`` live in :mod:`uncertainty_rrsis.cli` (the
scripts in ``examples/`` only call them); the other scripts are loaded from their files.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROGRAMS = ("train", "evaluate", "predict", "export")


def load_example(name: str) -> ModuleType:
    """The module of a program (``uncertainty_rrsis.cli.<name>``), or ``examples/<name>.py``
    imported as a fresh module named ``<name>_example``."""
    if name in PROGRAMS:
        return importlib.import_module(f"uncertainty_rrsis.cli.{name}")
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no example script {EXAMPLES / (name + '.py')}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look a module up by name
    spec.loader.exec_module(module)
    return module
