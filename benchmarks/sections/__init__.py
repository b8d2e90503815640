"""The sections of ``benchmarks.latency``, one module each: ``benchmarks/sections/<name>.py``.

Every section module has ``run(runner) -> dict``: it measures with the helpers of
``benchmarks._runner.Runner`` and returns the section's payload (usually ``{"records": [...]}``), which
the runner stamps and writes into ``<tag>.json`` under ``sections.<name>``. A section is imported
only when it runs.

The sections, in the order of ``SECTIONS``, and what each measures are listed in the docstring of
``benchmarks/latency.py``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

SECTIONS = ("syncs", "modules", "rows", "sweep", "batch", "channels_last", "compile", "cudagraphs", "training",
            "decoders")


def run(name: str, runner: Any) -> dict[str, Any]:
    """Run the section ``name`` (one of ``SECTIONS``) and return its payload."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}; use {list(SECTIONS)}")
    return import_module(f"{__name__}.{name}").run(runner)
