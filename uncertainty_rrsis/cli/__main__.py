"""``python -m uncertainty_rrsis.cli <command> ...`` (what ``torchrun -m`` runs)."""

import sys

from . import main

sys.exit(main())
