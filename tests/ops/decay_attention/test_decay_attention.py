"""decay_attention specifics: ALiBi as a special case, timestamps, eps."""
import math

import torch

import tempattn


def test_one_scale_without_eps_is_alibi(backend):
    q, k, v = (torch.randn(1, 2, 12, 8) for _ in range(3))
    slopes = torch.tensor([[-0.5], [-0.125]])
    out = tempattn.decay_attention(q, k, v, slopes, torch.zeros(2, 1), eps=0.0, backend=backend)
    i = torch.arange(12)
    distance = (i[:, None] - i[None, :]).float()
    bias = torch.where(distance >= 0, slopes[:, :, None] * distance, -math.inf)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, -1) @ v
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_times_are_shift_invariant_even_for_epoch_seconds(backend):
    q, k, v = (torch.randn(2, 2, 10, 8) for _ in range(3))
    lg, al = torch.log(torch.tensor([[0.9, 0.5], [0.99, 0.7]])), torch.randn(2, 2)
    times = torch.cumsum(torch.rand(2, 10, dtype=torch.float64) * 5, 1)
    a = tempattn.decay_attention(q, k, v, lg, al, times=times, backend=backend)
    b = tempattn.decay_attention(q, k, v, lg, al, times=times + 1.7e9, backend=backend)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_unit_spaced_times_equal_positions(backend):
    q, k, v = (torch.randn(2, 2, 10, 8) for _ in range(3))
    lg, al = torch.log(torch.tensor([[0.9, 0.5], [0.99, 0.7]])), torch.randn(2, 2)
    by_position = tempattn.decay_attention(q, k, v, lg, al, backend=backend)
    by_time = tempattn.decay_attention(q, k, v, lg, al, times=torch.arange(10.0).expand(2, 10), backend=backend)
    torch.testing.assert_close(by_position, by_time, rtol=1e-5, atol=1e-6)
