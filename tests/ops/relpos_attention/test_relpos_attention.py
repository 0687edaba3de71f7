"""relpos_attention specifics: the window and the shared last table entry."""
import torch

import tempattn


def test_unwindowed_table_shares_its_last_entry_past_its_end(backend):
    q, k, v = (torch.randn(1, 2, 20, 8) for _ in range(3))
    short = torch.randn(2, 3)
    long = torch.cat([short, short[:, -1:].expand(2, 30)], dim=1)
    a = tempattn.relpos_attention(q, k, v, short, window=None, backend=backend)
    b = tempattn.relpos_attention(q, k, v, long, window=None, backend=backend)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_window_at_least_the_sequence_equals_no_window(backend):
    q, k, v = (torch.randn(2, 2, 10, 8) for _ in range(3))
    rel = torch.randn(2, 15)
    windowed = tempattn.relpos_attention(q, k, v, rel, window=14, backend=backend)
    unwindowed = tempattn.relpos_attention(q, k, v, rel, window=None, backend=backend)
    torch.testing.assert_close(windowed, unwindowed, rtol=1e-6, atol=1e-6)


def test_window_zero_returns_the_current_value(backend):
    q, k, v = (torch.randn(2, 2, 10, 8) for _ in range(3))
    out = tempattn.relpos_attention(q, k, v, torch.randn(2, 1), window=0, backend=backend)
    torch.testing.assert_close(out, v, rtol=1e-6, atol=1e-6)


def test_rel_bias_gradient_is_deterministic(backend):
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    rel = torch.randn(3, 9, requires_grad=True)
    grads = []
    for _ in range(2):
        out = tempattn.relpos_attention(q, k, v, rel, window=8, backend=backend)
        grads.append(torch.autograd.grad(out.sum(), rel)[0])
    assert torch.equal(grads[0], grads[1])
