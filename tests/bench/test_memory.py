"""tempattn.bench.memory sees an op's own allocations: a T x T tensor grows quadratically, inputs are not counted."""
import pytest
import torch

from tempattn.bench.memory import available_bytes, peak_extra_bytes


def _square_then_sum(T: int):
    def run():
        scores = torch.ones(T, T)
        return (scores * 2).sum()  # peak: two T x T float32 tensors alive at once
    return run


def test_peak_of_a_square_allocation_grows_quadratically():
    peaks = {T: peak_extra_bytes(_square_then_sum(T), "cpu")[0] for T in (256, 512, 1024)}
    for T, peak in peaks.items():
        assert peak == pytest.approx(2 * 4 * T * T, rel=0.01)
    assert peaks[1024] / peaks[512] == pytest.approx(4.0, rel=0.01)


def test_memory_allocated_before_the_call_is_not_counted():
    inputs = torch.ones(1024, 1024)
    peak, seconds = peak_extra_bytes(lambda: inputs.sum(), "cpu")
    assert peak < 4096 and seconds >= 0


def test_available_bytes_is_positive():
    assert available_bytes("cpu") > 0
