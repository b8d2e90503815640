"""The three plug-and-play modules of CroBIM-U (torch + einops only), and the optional risk heads."""

from .gated_fusion import UncertaintyGatedFusion
from .refinement import UncertaintyDrivenRefinement
from .risk import RISK_STATISTICS, PixelRiskHead, SampleRiskHead
from .scorer import ReferringUncertaintyScorer

__all__ = [
    "ReferringUncertaintyScorer",
    "UncertaintyGatedFusion",
    "UncertaintyDrivenRefinement",
    "SampleRiskHead",
    "PixelRiskHead",
    "RISK_STATISTICS",
]
