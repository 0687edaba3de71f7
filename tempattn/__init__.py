"""tempattn: fused attention with temporal structure for PyTorch.

Operators: :func:`masked_sdpa`, :func:`relpos_attention`, :func:`decay_attention`;
layers in :mod:`tempattn.nn`; :func:`backends` reports what can run here;
:func:`empty_cache` / :func:`cpu_cache_info` manage the CPU kernels' block cache.
"""
from . import nn, testing
from ._dispatch import backends
from .memory import cpu_cache_info, empty_cache
from .ops import decay_attention, masked_sdpa, relpos_attention

__version__ = "0.2.0"

__all__ = ["masked_sdpa", "relpos_attention", "decay_attention", "backends", "empty_cache", "cpu_cache_info", "nn",
           "testing", "__version__"]
