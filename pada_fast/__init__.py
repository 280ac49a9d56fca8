"""pada_fast: one-shot NAS supernet training with PA&DA and SPOS, fused kernels, ranking and search."""
__version__ = "0.1.0"
