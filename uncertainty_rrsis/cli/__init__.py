"""The ``uncertainty-rrsis`` command: the programs of the library after ``pip install``.

::

    uncertainty-rrsis train        [options]           # train and evaluate (no options: the embedded default)
    uncertainty-rrsis evaluate     CHECKPOINT [...]    # score a checkpoint with the field's protocol
    uncertainty-rrsis predict      CHECKPOINT --image ... --sentence ...   # masks, uncertainty, GeoTIFFs
    uncertainty-rrsis export       CHECKPOINT --output model.onnx          # ONNX, checked with onnxruntime
    uncertainty-rrsis check-data   --dataset NAME --root DIR               # every bad sample of a dataset

``uncertainty-rrsis <command> --help`` lists a command's options. Under ``torchrun`` run the module:
``torchrun --nproc_per_node=8 -m uncertainty_rrsis.cli train ...``. The scripts in a checkout's
``examples/`` (``python examples/train.py``) run the same programs.

Each program is one module here (``train``, ``evaluate``, ``predict``, ``export``; ``check-data``
is :mod:`uncertainty_rrsis.data.check`) with ``main(argv, *, prog=None)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__

__all__ = ["COMMANDS", "main", "run"]

#: command -> (module, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("uncertainty_rrsis.cli.train", "train and evaluate CroBIM-U (no options: the embedded default run)"),
    "evaluate": ("uncertainty_rrsis.cli.evaluate", "score a checkpoint with the field's protocol"),
    "predict": ("uncertainty_rrsis.cli.predict", "segment images or GeoTIFF scenes from sentences"),
    "export": ("uncertainty_rrsis.cli.export", "export a checkpoint to ONNX and check it with onnxruntime"),
    "check-data": ("uncertainty_rrsis.data.check", "report every bad sample of a dataset"),
}

#: Errors ``predict`` reports in one line, without a traceback: bad paths, values and missing packages
#: (the other programs catch what they expect themselves).
_REPORTED = (FileNotFoundError, ValueError, TypeError, ImportError)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: uncertainty-rrsis <command> [options]   (uncertainty-rrsis {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "uncertainty-rrsis <command> --help lists a command's options."]
    return "\n".join(lines)


def run(command: str, argv: Sequence[str] | None = None, *, prog: str | None = None) -> Any:
    """Run one program with its arguments and return what it returns; an error it expects ends it
    with a one-line message (exit status 1) instead of a traceback."""
    if command not in COMMANDS:
        raise SystemExit(f"uncertainty-rrsis: unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[command][0])
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if command == "check-data":  # its parser names itself; the status is its result
            status = module.main(args, prog=prog)
            if status:
                raise SystemExit(status)
            return status
        return module.main(args, prog=prog)
    except _REPORTED as err:
        if command != "predict":
            raise
        raise SystemExit(f"{prog or command}: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``uncertainty-rrsis`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"uncertainty-rrsis {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(_usage(), file=sys.stderr)
        raise SystemExit(f"uncertainty-rrsis: unknown command {args[0]!r}; expected one of {', '.join(COMMANDS)}")
    run(args[0], args[1:], prog=f"uncertainty-rrsis {args[0]}")
    return 0
