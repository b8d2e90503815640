"""Section ``cudagraphs``: the ``compile`` section in ``mode="reduce-overhead"`` (inductor with CUDA
graphs: the whole inference replayed as one graph, possible only without host synchronisations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.sections.compile import compile_one_mode

if TYPE_CHECKING:
    from benchmarks._runner import Runner


def run(runner: Runner) -> dict[str, Any]:
    return {"records": compile_one_mode(runner, "reduce-overhead"), "timed_together": True}
