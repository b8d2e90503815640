"""Helpers shared by the tests, importable as ``helpers`` (``pythonpath = ["tests"]`` in the
pytest settings of ``pyproject.toml``):

- ``helpers.decoders``: toy decoders and decoders shaped like the field's, wrapped or bare;
- ``helpers.tiny``: the one tiny reference-model setting (random BERT, small ConvNeXt);
- ``helpers.datasets``: dataset folders in each benchmark's exact on-disk format, generated or
  laid out from the genuine sample annotations beside the repository;
- ``helpers.reference``: slow, obviously-correct references (a Gaussian blur by hand);
- ``helpers.examples``: the programs behind ``examples/`` as modules (``load_example``).
"""
