"""The three plug-and-play modules of CroBIM-U (torch + einops only)."""

from .gated_fusion import UncertaintyGatedFusion
from .refinement import UncertaintyDrivenRefinement
from .scorer import ReferringUncertaintyScorer

__all__ = ["ReferringUncertaintyScorer", "UncertaintyGatedFusion", "UncertaintyDrivenRefinement"]
