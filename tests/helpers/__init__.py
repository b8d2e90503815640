"""Helpers shared by the tests: toy decoders, tiny model settings and dataset fixtures.

Importable as ``helpers`` (``pythonpath = ["tests"]`` in the pytest settings of ``pyproject.toml``).
"""
