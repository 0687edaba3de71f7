"""The machine's fp32 matmul throughput (N x N, N = 2048): the ceiling GFLOP/s are compared with."""
from tempattn.bench.anchors import matmul_callable
from tempattn.bench.cases import matmul_case


def cases(profile, devices):
    return [matmul_case(profile, device) for device in devices]


def test_matmul_ceiling(case, run_benchmark):
    run_benchmark(case, lambda: matmul_callable(case))
