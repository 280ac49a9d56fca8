"""Architecture search with inherited supernet weights: evolution, random search, MACs tables."""
