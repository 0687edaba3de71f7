"""Extreme-regime inputs, a float64 oracle that stays exact there, and the comparisons of test_extremes.py.

The oracle differs from ``tests/ops/dense.py`` where these regimes need it to:

- the decay mixture is evaluated in log space, ``logaddexp(logsumexp_s(log a_s + log_gamma_s * Delta), log eps)``
  (docs/contract.md): dense.py's linear-space ``gamma ** Delta`` underflows to 0 for strong decays and turns finite
  scores into ``-inf`` (and its log-gamma gradient into NaN);
- non-finite inputs reach only admissible pairs: a NaN in key ``j`` (``k``, ``v`` or ``key_bias``) reaches the
  outputs and gradients of exactly the rows that admit ``j`` (docs/contract.md), where dense.py's matmuls would spread
  ``0 * NaN`` to every row;
- a row with a ``+inf`` score has a NaN output; whether its lse is NaN or +inf and its other weights NaN or 0 is
  the order of operations (online softmax or plain logsumexp), and both are accepted (``inf_score_row``);
- a row whose admissible scores are all ``-inf`` (e.g. every admissible key carries a ``-inf`` key bias) is an
  empty row: zeros, ``lse = -inf`` and zero gradients, as the reference backend does. ``-inf`` key biases are
  weights of 0, not masks, so such a row is decided by the scores alone, and a row with a NaN score is never
  empty (its output and lse are NaN).

``test_oracle_agrees_with_dense_formula`` checks this oracle against dense.py where both are exact.
"""
import contextlib
import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch

from .cases import DIFFERENTIABLE, Case, key_valid, make_inputs

BLOCK = 64  # the CPU kernels' key block: regimes put soft padding on whole blocks, the first one included


@dataclass(frozen=True)
class Regime:
    """A Case plus the extreme values a draw writes into its random inputs."""
    name: str
    case: Case
    draws: int                                   # random draws per test (fresh inputs each)
    scale: Optional[float] = None
    soft_pad: Optional[float] = None             # key_bias value of "padded" keys: -1e4, -1e9, -inf
    pad_pattern: str = "random"                  # random | block | first_block (keys 0..63)
    log_gamma: Optional[Tuple[float, ...]] = None  # decay: one value per scale, every head
    alpha_logits: Optional[float] = None         # decay: every entry
    times_span: Optional[float] = None           # decay: timestamps spread over this many seconds
    time_origin: float = 0.0                     # decay: added to the timestamps (epoch seconds)
    far_bias: Optional[float] = None             # relpos: rel_bias[:, -1], shared by every far distance
    poison: Optional[Tuple[str, float]] = None   # (input, value): NaN / inf entries written into q, k, v or key_bias

    def __str__(self):
        return f"{self.case.op}-{self.name}"

    @property
    def long(self) -> bool:
        """Long enough to be slow under the Triton interpreter."""
        return self.case.Tk > 300

    def with_(self, **kw):
        return replace(self, **kw)


@contextlib.contextmanager
def single_threaded():
    """Run the oracle and the comparisons on one thread: their tensors are small, and on a busy machine torch's
    intra-op threads spend ~100x longer waiting for each other than computing. The kernels keep their threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _soft_pad_keys(reg: Regime, shape) -> torch.Tensor:
    """Bool keys that get the soft-padding bias: a random subset, plus a whole block or the first block."""
    Tk = shape[-1]
    pad = torch.rand(shape) < 0.3
    if reg.pad_pattern == "block" and Tk >= 2 * BLOCK:
        start = BLOCK * int(torch.randint(0, Tk // BLOCK, ()))
        pad[..., start:start + BLOCK] = True
    elif reg.pad_pattern == "first_block":
        pad[..., :BLOCK] = True
    return pad


def _poison_keys(x: dict, Tk: int, B: int) -> list:
    """(b, j) key positions to poison: one in the first block, one anywhere, and a padded key when there is one
    (a non-finite value under padding must change nothing)."""
    spots = []
    for b in range(B):
        spots += [(b, int(torch.randint(0, min(BLOCK, Tk), ()))), (b, int(torch.randint(0, Tk, ())))]
        if "key_padding_mask" in x and x["key_padding_mask"][b].any():
            padded = x["key_padding_mask"][b].nonzero().flatten()
            spots.append((b, int(padded[torch.randint(0, len(padded), ())])))
    return spots


def _poison(x: dict, name: str, value: float) -> None:
    q = x["q"]
    B, H, Tq, D = q.shape
    if name == "q":
        for b in range(B):
            for _ in range(2):
                q[b, torch.randint(0, H, ()), torch.randint(0, Tq, ()), torch.randint(0, D, ())] = value
        return
    for b, j in _poison_keys(x, x["k"].shape[2], B):
        h = int(torch.randint(0, H, ()))
        if name == "key_bias":
            x["key_bias"][(b, j) if x["key_bias"].dim() == 2 else (b, h, j)] = value
        else:
            x[name][b, h, j, torch.randint(0, x[name].shape[-1], ())] = value


def make_regime_inputs(reg: Regime, dtype: torch.dtype, device="cpu") -> dict:
    """Fresh random inputs of ``reg`` (q, k, v in ``dtype``; parameters as cases.make_inputs keeps them), leaves
    on ``device`` with requires_grad on the differentiable ones."""
    case = reg.case
    x = make_inputs(case, dtype, requires_grad=False)
    if reg.soft_pad is not None:
        kb = x["key_bias"]
        kb.masked_fill_(_soft_pad_keys(reg, kb.shape), reg.soft_pad)
    if reg.log_gamma is not None:
        x["log_gamma"].copy_(torch.tensor(reg.log_gamma).expand_as(x["log_gamma"]))
    if reg.alpha_logits is not None:
        x["alpha_logits"].fill_(reg.alpha_logits)
    if reg.times_span is not None:
        times = torch.sort(torch.rand(case.B, case.Tk, dtype=torch.float64) * reg.times_span, dim=1).values
        x["times"] = (times + reg.time_origin).to(x["times"].dtype)
    if reg.far_bias is not None:
        x["rel_bias"][:, -1] = reg.far_bias
    if reg.poison is not None:
        _poison(x, *reg.poison)
    return {n: t.to(device).requires_grad_(n in DIFFERENTIABLE[case.op]) for n, t in x.items()}


# ---------------------------------------------------------------------------------------------
# Oracle
# ---------------------------------------------------------------------------------------------

def offsets(Tq: int, Tk: int) -> torch.Tensor:
    """Delta_ij = p_i - j with p_i = i + Tk - Tq (bottom-right alignment), (Tq, Tk) int64."""
    return torch.arange(Tq)[:, None] + (Tk - Tq) - torch.arange(Tk)[None, :]


def admissible(case: Case, x: dict) -> torch.Tensor:
    """(B|1, 1, Tq, Tk) bool: key valid, causal, inside the window (a Python int compare: any window is exact)."""
    delta = offsets(case.Tq, case.Tk)
    causal = case.causal if case.op == "masked_sdpa" else True
    ok = torch.ones_like(delta, dtype=torch.bool)
    if causal:
        ok = ok & (delta >= 0)
    if causal and case.window is not None and case.window < case.Tk:
        ok = ok & (delta <= case.window)
    valid = key_valid(x)
    return ok[None, None] if valid is None else ok[None, None] & valid.cpu()[:, None, None, :]


def _score_modifier(case: Case, c: dict) -> Optional[torch.Tensor]:
    """m_ij of relpos / decay, broadcastable to (B, H, Tq, Tk)."""
    delta = offsets(case.Tq, case.Tk)
    if case.op == "relpos_attention":
        R = c["rel_bias"].shape[1]
        return c["rel_bias"][:, delta.clamp(0, R - 1)][None]
    if case.op != "decay_attention":
        return None
    if "times" in c:
        t = c["times"]
        p = (torch.arange(case.Tq) + case.Tk - case.Tq)
        dist = (t[:, p][:, :, None] - t[:, None, :]).clamp_min(0)       # (B, Tq, Tk)
    else:
        dist = delta.clamp_min(0).to(c["log_gamma"].dtype)[None]         # (1, Tq, Tk)
    log_a = torch.log_softmax(c["alpha_logits"], dim=-1)                  # (H, S)
    terms = log_a[None, :, None, None, :] + c["log_gamma"][None, :, None, None, :] * dist[:, None, :, :, None]
    mix = torch.logsumexp(terms, dim=-1)
    return torch.logaddexp(mix, torch.full_like(mix, math.log(case.eps))) if case.eps > 0 else mix


def _all_finite(*tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _pair_dots(q, k, ok):
    """q_i . k_j for every (i, j); with non-finite q or k, masked pairs use zeros so that neither the forward nor
    autograd's backward (0 * NaN) lets a value reach a row that does not admit its key."""
    if _all_finite(q, k):
        return torch.einsum("bhid,bhjd->bhij", q, k)
    okd = ok[..., None]
    return (torch.where(okd, q[:, :, :, None, :], 0.0) * torch.where(okd, k[:, :, None, :, :], 0.0)).sum(-1)


def _weighted_values(p, v, ok):
    """sum_j p_ij v_j over admissible j (elementwise when v is non-finite, for the reason of _pair_dots)."""
    if _all_finite(v):
        return torch.einsum("bhij,bhjd->bhid", p, v)
    okd = ok[..., None]
    return (p[..., None] * torch.where(okd, v[:, :, None, :, :], 0.0)).sum(-2)


def oracle(reg: Regime, x: dict, compute_dtype=torch.float64, inf_score_row="nan"):
    """(out, lse, sigma) of the dense formula on ``x``, computed in ``compute_dtype``.

    inf_score_row: a row with a +inf score is a NaN row ("nan": lse and every weight NaN, the online form
    m + log(sum exp(s - m)) with m = inf) or keeps the plain logsumexp ("plain": lse = +inf, weight NaN at the
    +inf key and 0 elsewhere). Both readings of the formula are accepted where they differ.

    sigma (B, H, Tq) is the magnitude at which each row's scores are rounded: |lse_i| + max_j |scale q_i.k_j|,
    plus |log_gamma| * max|times - times[:, 0]| for decay with timestamps (the kernels shift times to start at 0
    in their own precision).
    It scales the rounding part of the tolerances: a -1e9 soft-padded row is only exact to ~1e9 ulps.
    """
    case = reg.case
    c = {n: t.to(compute_dtype) if t.is_floating_point() else t for n, t in x.items()}
    q, k, v = c["q"], c["k"], c["v"]
    B, H = q.shape[:2]
    scale = reg.scale if reg.scale is not None else 1.0 / math.sqrt(q.shape[-1])
    ok = admissible(case, x).expand(B, H, case.Tq, case.Tk)
    dots = _pair_dots(q, k, ok) * scale
    s = dots
    if "key_bias" in c:
        kb = c["key_bias"]
        s = s + (kb[:, None, None, :] if kb.dim() == 2 else kb[:, :, None, :])
    m = _score_modifier(case, c)
    if m is not None:
        s = s + m
    s = torch.where(ok, s, -torch.inf)
    # Empty row: every admissible score is -inf (or no admissible key). NaN is no -inf: a NaN row is not empty.
    live = ~(s.detach() == -torch.inf).all(-1, keepdim=True)
    lse = torch.where(live, torch.logsumexp(torch.where(live, s, 0.0), dim=-1, keepdim=True), -torch.inf)
    if inf_score_row == "nan":
        lse = torch.where(lse == torch.inf, torch.nan, lse)
    p = torch.where(ok & live, torch.exp(s - torch.where(live, lse, 0.0)), 0.0)
    out = _weighted_values(p, v, ok)
    with torch.no_grad():
        finite_dots = torch.where(ok & torch.isfinite(dots), dots.abs(), 0.0)
        sigma = _amax(finite_dots, -1) + torch.where(torch.isfinite(lse), lse.abs(), 0.0)[..., 0]
        if case.op == "decay_attention" and "times" in c:
            sigma = sigma + _max_all(c["log_gamma"].abs()) * _max_all(c["times"] - c["times"][:, :1])
    return out, lse[..., 0], sigma.double()


def _max_all(t: torch.Tensor) -> torch.Tensor:
    """Largest entry, 0 for an empty tensor (zero-size inputs)."""
    return t.max() if t.numel() else t.new_zeros(())


def _amax(t: torch.Tensor, dim) -> torch.Tensor:
    """amax that gives zeros over an empty dimension (zero-size inputs)."""
    if t.shape[dim] == 0:
        shape = list(t.shape)
        del shape[dim]
        return t.new_zeros(shape)
    return t.amax(dim)


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------

# Per precision: (rtol, atol relative to each tensor's magnitude, rounding factor on eps * sigma).
TOLERANCE = {torch.float64: (1e-9, 1e-9, 64.0), torch.float32: (2e-4, 2e-5, 64.0)}


def rounding_scale(name: str, sigma: torch.Tensor, ok: torch.Tensor, key_bias_dims: int = 3):
    """sigma for each entry of output or gradient ``name``: rows for out, lse and dq; the largest sigma of the
    rows that admit a key for dk, dv and dkey_bias; the largest of all for the score parameters."""
    if name in ("out", "q"):
        return sigma[..., None]
    if name == "lse":
        return sigma
    keys = _amax(torch.where(ok, sigma[..., None], 0.0), -2)                # (B, H, Tk)
    if name in ("k", "v"):
        return keys[..., None]
    if name == "key_bias":
        return keys if key_bias_dims == 3 else _amax(keys, 1)
    return _max_all(sigma)


def magnitude(expected: torch.Tensor) -> float:
    """The scale absolute tolerances are relative to: the largest finite |entry|, at least 1."""
    finite = expected[torch.isfinite(expected)]
    return max(1.0, finite.abs().max().item()) if finite.numel() else 1.0


def _nonfinite_mismatch(a, e, nonfinite):
    if nonfinite == "finite":
        return torch.isfinite(a) != torch.isfinite(e)
    if nonfinite == "superset":
        return torch.isfinite(a) & ~torch.isfinite(e)
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    return torch.where(torch.isfinite(e), ~torch.isfinite(a), ~same)


def assert_matches(what: str, actual, expected, *, dtype, sigma, relative_atol=True, nonfinite="exact",
                   alternative=None):
    """|actual - expected| <= atol + rtol |expected| where expected is finite, with atol = (floor + c eps sigma)
    times the tensor's magnitude (or 1 where ``relative_atol`` is False, as for lse); non-finite entries:

    - "exact": NaN, +inf and -inf exactly where expected has them (as torch.testing's equal_nan);
    - "finite": only where the non-finite entries are (gradients: inf - inf in a backward gives NaN or inf
      depending on the order of operations; which of the two is not part of the contract);
    - "superset": at least where expected has them (never hidden); more may be non-finite, and the entries
      finite in both must still match.

    ``alternative``: another accepted expectation (the other reading of a +inf score); an entry may match either.
    """
    rtol, floor, c = TOLERANCE[dtype]
    a = actual.detach().double().cpu()
    e = expected.detach().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
    mismatch = _nonfinite_mismatch(a, e, nonfinite)
    if alternative is not None:
        mismatch &= _nonfinite_mismatch(a, alternative.detach().double(), nonfinite)
    if mismatch.any():
        at = tuple(mismatch.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(mismatch.sum())} of {a.numel()} entries differ in NaN/inf, "
                             f"first at {at}: got {a[at].item()}, expected {e[at].item()}")
    mag = magnitude(e) if relative_atol else 1.0
    bound = (floor + c * torch.finfo(dtype).eps * sigma) * mag + rtol * e.abs()
    both = torch.isfinite(e) & torch.isfinite(a)
    err = torch.where(both, (a - e).abs(), 0.0)
    over = err > bound
    if over.any():
        at = tuple(int(i) for i in torch.unravel_index((err - bound).flatten().argmax(), err.shape))
        raise AssertionError(f"{what}: {int(over.sum())} of {a.numel()} entries off; worst at {at}: got "
                             f"{a[at].item():.17g}, expected {e[at].item():.17g}, tolerance {bound[at].item():.3g}")
