"""Segment images from sentences with a trained CroBIM-U checkpoint: ``uncertainty-rrsis predict``, run from a checkout.

``python examples/predict.py --help`` lists the options; the program is
:mod:`uncertainty_rrsis.cli.predict`.
"""

import sys

from uncertainty_rrsis.cli import run

if __name__ == "__main__":
    run("predict", sys.argv[1:])
