"""Ranking metrics, ground-truth readers and plots for judging a supernet's ranking.

Import from the submodules: ``pada_fast.evaluate.metrics``, ``.ground_truth``, ``.plots``."""
