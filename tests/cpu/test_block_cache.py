"""The CPU kernels' block cache (csrc/cpu/common/block_cache.cpp): reuse, accounting, release, the budget."""
import os
import subprocess
import sys
import threading

import pytest
import torch

import tempattn
from tempattn.bench.memory import peak_extra_bytes

pytestmark = pytest.mark.skipif(not tempattn.backends()["cpu"]["available"],
                                reason=f"cpu backend unavailable: {tempattn.backends()['cpu']['reason']}")

# (1, 2, 8192, 64) float32: a 4 MiB output, above the 2 MiB the cache starts at.
SHAPE = (1, 2, 8192, 64)


def large_inputs():
    return [torch.randn(SHAPE) for _ in range(3)]


def forward(q, k, v):
    return tempattn.masked_sdpa(q, k, v, causal=True, backend="cpu")[0]


def test_freed_output_is_reused_with_its_storage():
    q, k, v = large_inputs()
    first = forward(q, k, v)
    expected, ptr = first.clone(), first.data_ptr()
    del first
    hits = tempattn.cpu_cache_info()["hits"]
    second = forward(q, k, v)
    assert second.data_ptr() == ptr
    assert tempattn.cpu_cache_info()["hits"] > hits
    torch.testing.assert_close(second, expected, rtol=0, atol=0)


def test_live_outputs_never_share_a_block():
    q, k, v = large_inputs()
    outs = [forward(q, k, v) for _ in range(3)]
    assert len({o.data_ptr() for o in outs}) == 3
    outs[0].fill_(float("nan"))
    torch.testing.assert_close(outs[1], outs[2], rtol=0, atol=0)
    assert not outs[1].isnan().any()


def test_profiler_counts_a_reused_block_as_allocated():
    q, k, v = large_inputs()
    forward(q, k, v)  # warm: the output block is now cached
    peak, _ = peak_extra_bytes(lambda: forward(q, k, v), "cpu")
    assert peak >= torch.Size(SHAPE).numel() * 4


def test_empty_cache_releases_every_cached_block():
    q, k, v = large_inputs()
    forward(q, k, v)
    cached = tempattn.cpu_cache_info()["cached_bytes"]
    assert cached >= torch.Size(SHAPE).numel() * 4
    assert tempattn.empty_cache() == cached
    assert tempattn.cpu_cache_info()["cached_bytes"] == 0


def test_threads_calling_at_once_get_correct_results():
    q, k, v = large_inputs()
    expected = forward(q, k, v).clone()
    failures = []

    def worker():
        for _ in range(4):
            out = forward(q, k, v)
            if not torch.equal(out, expected):
                failures.append(out)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _run_with_budget(value: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TEMPATTN_CPU_CACHE_MB=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


CALL_TWICE = f"""
import torch, tempattn
q, k, v = (torch.randn{SHAPE} for _ in range(3))
for _ in range(2):
    tempattn.masked_sdpa(q, k, v, backend="cpu")
print(tempattn.cpu_cache_info())
"""


def test_budget_zero_turns_the_cache_off():
    result = _run_with_budget("0", CALL_TWICE)
    assert result.returncode == 0, result.stderr
    info = eval(result.stdout.strip().splitlines()[-1])
    assert info["capacity_bytes"] == 0 and info["cached_bytes"] == 0 and info["hits"] == 0


def test_budget_smaller_than_a_block_keeps_nothing():
    result = _run_with_budget("3", CALL_TWICE)  # 3 MiB < the 4 MiB output block
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout.strip().splitlines()[-1])["cached_bytes"] <= 3 << 20


def test_bad_budget_is_a_clear_error():
    result = _run_with_budget("lots", CALL_TWICE)
    assert result.returncode != 0
    assert "TEMPATTN_CPU_CACHE_MB" in result.stderr and "'lots'" in result.stderr
