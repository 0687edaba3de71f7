"""The C++ CPU kernels' block cache: large outputs and working buffers kept for reuse.

A CPU tensor of 2 MiB or more that glibc maps afresh costs a page fault per 4 KiB page on first
touch (a (2, 4, 16384, 64) float32 output: ~8 ms, a third of the kernel's own time). The CPU
kernels take such blocks from a cache that keeps them when their tensor dies, up to
``TEMPATTN_CPU_CACHE_MB`` MiB (default 1024; ``0`` turns it off), like the CUDA caching
allocator does for GPU memory. A cached block is not counted as allocated by torch's memory
profiler until a tensor holds it again.
"""
from typing import Dict

import torch

from ._dispatch import extension_loaded

__all__ = ["cpu_cache_info", "empty_cache"]


def cpu_cache_info() -> Dict[str, int]:
    """``cached_bytes`` (held for reuse, in no tensor), ``capacity_bytes``, ``hits`` and ``misses``."""
    keys = ("cached_bytes", "capacity_bytes", "hits", "misses")
    if not extension_loaded():
        return dict.fromkeys(keys, 0)
    return dict(zip(keys, torch.ops.tempattn_C.cpu_cache_info()))


def empty_cache() -> int:
    """Return every cached CPU block to the system; returns the bytes released."""
    return int(torch.ops.tempattn_C.empty_cpu_cache()) if extension_loaded() else 0
