"""Philox4x32-10 dropout keep mask, the one definition every backend reproduces.

The keep decision for element ``(b, h, i, j)`` is a pure function of
``(seed, b, h, i, j)``:

    key     = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    counter = (j, i, h, b)                       # four uint32 words
    u       = Philox4x32-10(counter, key)[0]     # first output word
    keep    = u >= dropout_threshold(p)          # threshold = floor(p * 2**32)

This is the Random123 Philox4x32 with 10 rounds, the same generator as
``triton.language.philox``; the C++ and CUDA kernels implement it likewise.
Here it is written with int64 torch tensors (32x32-bit products split into
16-bit halves so nothing overflows), so it runs on any device.
"""
import torch

_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_MASK32 = 0xFFFFFFFF
N_ROUNDS = 10


def dropout_threshold(p: float) -> int:
    """uint32 threshold: an element is kept iff its Philox word is >= this."""
    return min(int(p * 4294967296.0), _MASK32)


def _mul_hi_lo(a: int, x: torch.Tensor):
    """(hi, lo) 32-bit words of the 64-bit product of constant ``a`` and uint32 ``x``."""
    x_hi, x_lo = x >> 16, x & 0xFFFF
    t = a * x_hi
    s = ((t & 0xFFFF) << 16) + a * x_lo
    return (t >> 16) + (s >> 32), s & _MASK32


def philox4x32(c0, c1, c2, c3, seed: int, n_rounds: int = N_ROUNDS):
    """Philox4x32 on int64 tensors holding uint32 values; returns the four words."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(n_rounds):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def dropout_keep_mask(seed: int, B: int, H: int, Tq: int, Tk: int, p: float, device=None) -> torch.Tensor:
    """Boolean keep mask ``(B, H, Tq, Tk)`` for dropout probability ``p`` and ``seed``.

    Every backend keeps exactly these elements, so tests compare backends bit for bit.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_keep_mask: p must be in [0, 1), got {p}; hint: pass the dropout probability")
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    idx = [torch.arange(n, device=device, dtype=torch.int64) for n in (B, H, Tq, Tk)]
    b, h, i, j = torch.meshgrid(*idx, indexing="ij")
    word, _, _, _ = philox4x32(j, i, h, b, seed)
    return word >= dropout_threshold(p)
