"""Train and evaluate CroBIM-U: ``uncertainty-rrsis train``, run from a checkout.

``python examples/train.py --help`` lists the options; the program is
:mod:`uncertainty_rrsis.cli.train`.
"""

import sys

from uncertainty_rrsis.cli import run

if __name__ == "__main__":
    run("train", sys.argv[1:])
