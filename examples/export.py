"""Export a CroBIM-U checkpoint to ONNX and check it with onnxruntime: ``uncertainty-rrsis export``,
run from a checkout.

``python examples/export.py --help`` lists the options; the program is
:mod:`uncertainty_rrsis.cli.export`.
"""

import sys

from uncertainty_rrsis.cli import run

if __name__ == "__main__":
    run("export", sys.argv[1:])
