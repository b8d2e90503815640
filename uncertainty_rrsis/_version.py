"""The package version (read by the build backend and by ``uncertainty_rrsis.__version__``)."""

__version__ = "0.1.0.dev0"
