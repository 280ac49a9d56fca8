"""Datasets, transforms and the index-stream loaders (torch backend here; DALI alongside).

Import from the submodules: ``pada_fast.data.datasets``, ``.transforms``, ``.loader``."""
