"""The dropout keep mask is Philox4x32-10 exactly as documented, and the same as Triton's."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tempattn.ops.common.philox import dropout_threshold, philox4x32
from tempattn.testing import dropout_keep_mask


def philox_numpy(counter, seed):
    """Random123 Philox4x32-10 with numpy uint64 arithmetic (an independent implementation)."""
    c = [np.uint64(x) for x in counter]
    k0, k1, mask = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.uint64(0xFFFFFFFF)
    for _ in range(10):
        pb, pa = np.uint64(0xCD9E8D57) * c[2], np.uint64(0xD2511F53) * c[0]
        c = [(pb >> np.uint64(32)) ^ c[1] ^ k0, pb & mask, (pa >> np.uint64(32)) ^ c[3] ^ k1, pa & mask]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & mask, (k1 + np.uint64(0xBB67AE85)) & mask
    return [int(x) for x in c]


@pytest.mark.parametrize("seed", [0, 1, 0x123456789ABCDEF, 2**63 - 1])
def test_philox_matches_an_independent_implementation(seed):
    counters = [(0, 0, 0, 0), (5, 7, 1, 3), (0xFFFFFFFF, 12345, 2, 9), (17, 0xFFFFFFFE, 65535, 1)]
    for counter in counters:
        got = philox4x32(*(torch.tensor(c) for c in counter), seed)
        assert [int(w) for w in got] == philox_numpy(counter, seed)


def test_keep_mask_is_reproducible_and_has_the_right_rate():
    a = dropout_keep_mask(42, 2, 3, 64, 64, 0.3)
    assert a.shape == (2, 3, 64, 64) and a.dtype == torch.bool
    assert torch.equal(a, dropout_keep_mask(42, 2, 3, 64, 64, 0.3))
    assert not torch.equal(a, dropout_keep_mask(43, 2, 3, 64, 64, 0.3))
    assert abs(a.float().mean().item() - 0.7) < 0.02
    assert dropout_keep_mask(42, 1, 1, 8, 8, 0.0).all()


def test_keep_mask_element_depends_only_on_its_coordinates():
    big = dropout_keep_mask(7, 3, 2, 10, 12, 0.5)
    small = dropout_keep_mask(7, 2, 1, 4, 5, 0.5)
    assert torch.equal(big[:2, :1, :4, :5], small)


def test_threshold():
    assert dropout_threshold(0.0) == 0
    assert dropout_threshold(0.5) == 2**31
    assert dropout_threshold(0.9999999999999) <= 0xFFFFFFFF


TRITON_CHECK = textwrap.dedent("""
    import torch, triton, triton.language as tl
    from tempattn.ops.common.philox import philox4x32

    @triton.jit
    def words(out, seed, N: tl.constexpr):
        o = tl.arange(0, N)
        c = o.to(tl.uint32)
        w, _, _, _ = tl.philox(seed, c * 3, c + 1, c % 5, c * 7)
        tl.store(out + o, w.to(tl.int64) & 0xFFFFFFFF)

    out = torch.zeros(64, dtype=torch.int64)
    seed = 0x0123456789ABCDEF
    words[(1,)](out, seed, 64)
    c = torch.arange(64)
    assert out.tolist() == philox4x32(c * 3, c + 1, c % 5, c * 7, seed)[0].tolist()
""")


def test_philox_matches_triton_language_philox():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    subprocess.run([sys.executable, "-c", TRITON_CHECK], check=True, env=env, timeout=300)
