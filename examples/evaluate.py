"""Evaluate a CroBIM-U checkpoint with the field's protocol: ``uncertainty-rrsis evaluate``, run from a checkout.

``python examples/evaluate.py --help`` lists the options; the program is
:mod:`uncertainty_rrsis.cli.evaluate`.
"""

import sys

from uncertainty_rrsis.cli import run

if __name__ == "__main__":
    run("evaluate", sys.argv[1:])
