"""Benchmarks of uncertainty_rrsis (not part of the installed package).

Run from the repository root: ``python -m benchmarks.latency --help``.
"""
