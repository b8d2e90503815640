"""uncertainty-rrsis: uncertainty-aware referring remote-sensing image segmentation (CroBIM-U).

The four plug-and-play pieces need only torch and einops::

    from uncertainty_rrsis import (
        ReferringUncertaintyScorer,   # RUS, Eq. 3
        UncertaintyGatedFusion,       # UGF, Eq. 9-12
        UncertaintyDrivenRefinement,  # UDLR, Eq. 13-16
        OnlineErrorLoss,              # L_unc, Eq. 4-8
    )

The reference model lives in :mod:`uncertainty_rrsis.models` (extra ``models``), the datasets
in :mod:`uncertainty_rrsis.data` and the field's metrics in :mod:`uncertainty_rrsis.metrics`.
"""

from ._version import __version__
from .losses import BCEDiceLoss, OnlineErrorLoss, RiskGuidedLoss, RiskGuidedLossOutput
from .modules import ReferringUncertaintyScorer, UncertaintyDrivenRefinement, UncertaintyGatedFusion
from .wrapper import RiskGuidedDecoder, RiskGuidedOutput

__all__ = [
    "ReferringUncertaintyScorer",
    "UncertaintyGatedFusion",
    "UncertaintyDrivenRefinement",
    "OnlineErrorLoss",
    "RiskGuidedDecoder",
    "RiskGuidedOutput",
    "RiskGuidedLoss",
    "RiskGuidedLossOutput",
    "BCEDiceLoss",
    "__version__",
]
