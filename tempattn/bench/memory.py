"""Peak extra memory of one call, counting the call's own tensor allocations.

CPU: the torch profiler with ``profile_memory=True`` reports every allocation and free of
the CPU allocator (``[memory]`` events with signed byte counts, including those made by
``torch.compile``-generated code and C++ extensions that allocate tensors); the peak of
their running sum in time order is the call's peak on top of what existed before
(inputs, parameters). Memory a C++ kernel takes with ``malloc``/``std::vector`` outside
the torch allocator is not seen. CUDA: ``torch.cuda.max_memory_allocated`` after a reset,
minus the allocation at the start.
"""
import time
from typing import Callable, Tuple

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def _cpu_peak_and_seconds(fn: Callable[[], object]) -> Tuple[int, float]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        if event.device_type() == DeviceType.CPU:
            current += event.nbytes()
            peak = max(peak, current)
    return peak, seconds


def _cuda_peak_and_seconds(fn: Callable[[], object]) -> Tuple[int, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return torch.cuda.max_memory_allocated() - baseline, seconds


def peak_extra_bytes(fn: Callable[[], object], device: str) -> Tuple[int, float]:
    """(peak bytes allocated by ``fn`` above the starting level, wall seconds of that call)."""
    return _cuda_peak_and_seconds(fn) if device == "cuda" else _cpu_peak_and_seconds(fn)


def available_bytes(device: str) -> int:
    """Memory a case may use: 70% of what is free now (MemAvailable on CPU)."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
    else:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        free = int(fields["MemAvailable"].split()[0]) * 1024
    return int(0.7 * free)
