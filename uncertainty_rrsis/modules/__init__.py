"""The three plug-and-play modules of CroBIM-U (torch + einops only), and an optional per-sample risk head."""

from .gated_fusion import UncertaintyGatedFusion
from .refinement import UncertaintyDrivenRefinement
from .risk import RISK_STATISTICS, SampleRiskHead
from .scorer import ReferringUncertaintyScorer

__all__ = [
    "ReferringUncertaintyScorer",
    "UncertaintyGatedFusion",
    "UncertaintyDrivenRefinement",
    "SampleRiskHead",
    "RISK_STATISTICS",
]
