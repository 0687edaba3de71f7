"""Score modifiers of the tiled core, one set of jit functions each, selected by the ``MOD`` constexpr.

A modifier adds ``m_ij`` to the scores and, if it has parameters, accumulates their gradient
from ``dS`` in the dQ pass as per-row *partials* that the host reduces in a fixed order. Its
parameters occupy the core's two modifier pointer slots ``PARAM_0`` / ``PARAM_1``:

=================  ===========================  ======================================  ========================
modifier           PARAM_0, PARAM_1             m_ij                                     gradient partials
=================  ===========================  ======================================  ========================
``MOD_NONE``       unused                       0                                        none
``MOD_RELPOS``     rel_bias (H, R), unused      rel_bias[h, min(Delta, R - 1)]           band (B, H, Tq, R)
``MOD_DECAY``      log_gamma, log a (H, S)      logaddexp(logsumexp_s(log a_s +          d log_gamma, d log a
                                                log_gamma_s * Delta), log eps)           (B, H, Tq, S) each
=================  ===========================  ======================================  ========================

To add a modifier: give it a code below, its ``*_score`` / ``*_grad_*`` functions, a branch in
each dispatcher at the bottom of this file, and its entry in ``launch.MODIFIERS``.
"""
import triton
import triton.language as tl

# Modifier codes (the MOD constexpr of the kernels).
MOD_NONE: tl.constexpr = tl.constexpr(0)
MOD_RELPOS: tl.constexpr = tl.constexpr(1)
MOD_DECAY: tl.constexpr = tl.constexpr(2)


# ---------------------------------------------------------------------------------------------
# Shared by every operator: admissibility and dropout.
# ---------------------------------------------------------------------------------------------

@triton.jit
def admissible(o_m, p_m, o_n, Tq, Tk, VALID_ROW, window, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
               HAS_VALID: tl.constexpr):
    """[BLOCK_M, BLOCK_N] bool: in range, key valid, 0 <= Delta (<= window)."""
    ok = (o_m[:, None] < Tq) & (o_n[None, :] < Tk)
    if CAUSAL:
        ok = ok & (p_m[:, None] >= o_n[None, :])
    if WINDOWED:
        ok = ok & (p_m[:, None] - o_n[None, :] <= window)
    if HAS_VALID:
        b_valid = tl.load(VALID_ROW + o_n, mask=o_n < Tk, other=0)
        ok = ok & (b_valid != 0)[None, :]
    return ok


@triton.jit
def dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n):
    """[BLOCK_M, BLOCK_N] bool: Philox4x32-10 of counter (j, i, h, b) >= threshold (see tempattn philox.py)."""
    zeros = tl.zeros((o_m.shape[0], o_n.shape[0]), dtype=tl.uint32)
    c0 = zeros + o_n[None, :].to(tl.uint32)
    c1 = zeros + o_m[:, None].to(tl.uint32)
    word, _, _, _ = tl.philox(seed, c0, c1, zeros + i_h.to(tl.uint32), zeros + i_b.to(tl.uint32))
    return (word.to(tl.int64) & 0xFFFFFFFF) >= drop_thr


# ---------------------------------------------------------------------------------------------
# MOD_RELPOS: learned relative-position bias rel_bias (H, R).
# ---------------------------------------------------------------------------------------------

@triton.jit
def relpos_index(p_m, o_n, R):
    """[BLOCK_M, BLOCK_N] table column min(Delta, R - 1) (Delta clamped at 0 outside the causal band)."""
    return tl.minimum(tl.maximum(p_m[:, None] - o_n[None, :], 0), R - 1)


@triton.jit
def relpos_score(REL_BIAS, i_h, p_m, o_n, R):
    return tl.load(REL_BIAS + i_h * R + relpos_index(p_m, o_n, R)).to(tl.float32)


@triton.jit
def relpos_grad_tile(BAND_ROWS, tail, b_ds, ok, o_m, p_m, o_n, R):
    """Write dS_ij to band[i, Delta_ij] for Delta < R - 1 (one key per (row, Delta): no accumulation);
    return the running row sum over Delta >= R - 1 (the shared last column)."""
    distance = p_m[:, None] - o_n[None, :]
    tl.store(BAND_ROWS + o_m[:, None].to(tl.int64) * R + distance, b_ds.to(BAND_ROWS.dtype.element_ty),
             mask=ok & (distance < R - 1))
    return tail + tl.sum(tl.where(distance >= R - 1, b_ds, 0.0), 1)


@triton.jit
def relpos_grad_store(BAND_ROWS, tail, o_m, Tq, R):
    tl.store(BAND_ROWS + o_m.to(tl.int64) * R + R - 1, tail.to(BAND_ROWS.dtype.element_ty), mask=o_m < Tq)


# ---------------------------------------------------------------------------------------------
# MOD_DECAY: mixture of exponential decays, log_gamma and log a = log_softmax(alpha_logits) (H, S).
# ---------------------------------------------------------------------------------------------

@triton.jit
def decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 Delta clamped at 0, from positions or timestamps."""
    if HAS_TIMES:
        b_tq = tl.load(TIMES_ROW + p_m, mask=(p_m >= 0) & (p_m < Tk), other=0.0).to(tl.float32)
        b_tk = tl.load(TIMES_ROW + o_n, mask=o_n < Tk, other=0.0).to(tl.float32)
        delta = b_tq[:, None] - b_tk[None, :]
    else:
        delta = (p_m[:, None] - o_n[None, :]).to(tl.float32)
    return tl.maximum(delta, 0.0)


@triton.jit
def decay_term(LOG_GAMMA, LOG_A, i_h, s, S: tl.constexpr, delta):
    """log a_hs + log_gamma_hs * Delta for scale ``s``."""
    b_lg = tl.load(LOG_GAMMA + i_h * S + s).to(tl.float32)
    b_la = tl.load(LOG_A + i_h * S + s).to(tl.float32)
    return b_la + b_lg * delta


@triton.jit
def decay_mix(LOG_GAMMA, LOG_A, i_h, delta, log_eps, S: tl.constexpr, HAS_EPS: tl.constexpr):
    """m = logaddexp(logsumexp_s(log a_s + log_gamma_s * Delta), log eps), evaluated stably."""
    m_mix = decay_term(LOG_GAMMA, LOG_A, i_h, 0, S, delta)
    for s in tl.static_range(1, S):
        m_mix = tl.maximum(m_mix, decay_term(LOG_GAMMA, LOG_A, i_h, s, S, delta))
    total = tl.zeros_like(delta)
    for s in tl.static_range(S):
        total += tl.exp(decay_term(LOG_GAMMA, LOG_A, i_h, s, S, delta) - m_mix)
    mix = m_mix + tl.log(total)
    if HAS_EPS:
        top = tl.maximum(mix, log_eps)
        mix = top + tl.log(tl.exp(mix - top) + tl.exp(log_eps - top))
    return mix


@triton.jit
def decay_score(LOG_GAMMA, LOG_A, i_h, p_m, o_n, Tk, TIMES_ROW, log_eps, S: tl.constexpr, HAS_TIMES: tl.constexpr,
                HAS_EPS: tl.constexpr):
    return decay_mix(LOG_GAMMA, LOG_A, i_h, decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES), log_eps, S, HAS_EPS)


@triton.jit
def decay_grad_tile(d_log_gamma, d_log_a, LOG_GAMMA, LOG_A, b_ds, i_h, p_m, o_n, Tk, TIMES_ROW, log_eps,
                    S: tl.constexpr, S_PAD: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr):
    """Row sums of dS * r_s * Delta (d log_gamma_s) and dS * r_s (d log a_s), r_s = exp(term_s - m)."""
    delta = decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES)
    b_mod = decay_mix(LOG_GAMMA, LOG_A, i_h, delta, log_eps, S, HAS_EPS)
    o_s = tl.arange(0, S_PAD)
    for i_s in tl.static_range(S):
        b_w = b_ds * tl.exp(decay_term(LOG_GAMMA, LOG_A, i_h, i_s, S, delta) - b_mod)
        pick = (o_s == i_s)[None, :]
        d_log_a += tl.where(pick, tl.sum(b_w, 1)[:, None], 0.0)
        d_log_gamma += tl.where(pick, tl.sum(b_w * delta, 1)[:, None], 0.0)
    return d_log_gamma, d_log_a


@triton.jit
def decay_grad_store(D_LOG_GAMMA_ROWS, D_LOG_A_ROWS, d_log_gamma, d_log_a, o_m, Tq, S: tl.constexpr,
                     S_PAD: tl.constexpr):
    o_s = tl.arange(0, S_PAD)
    offsets = o_m[:, None].to(tl.int64) * S + o_s[None, :]
    mask = (o_m[:, None] < Tq) & (o_s[None, :] < S)
    tl.store(D_LOG_GAMMA_ROWS + offsets, d_log_gamma.to(D_LOG_GAMMA_ROWS.dtype.element_ty), mask=mask)
    tl.store(D_LOG_A_ROWS + offsets, d_log_a.to(D_LOG_A_ROWS.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Dispatch on MOD (constexpr: each kernel specialisation compiles one branch).
# ---------------------------------------------------------------------------------------------

@triton.jit
def score_mod(PARAM_0, PARAM_1, i_h, p_m, o_n, Tk, TIMES_ROW, R, log_eps, MOD: tl.constexpr, S: tl.constexpr,
              HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 m_ij of the modifier."""
    if MOD == MOD_RELPOS:
        return relpos_score(PARAM_0, i_h, p_m, o_n, R)
    elif MOD == MOD_DECAY:
        return decay_score(PARAM_0, PARAM_1, i_h, p_m, o_n, Tk, TIMES_ROW, log_eps, S, HAS_TIMES, HAS_EPS)
    else:
        return tl.zeros((p_m.shape[0], o_n.shape[0]), dtype=tl.float32)


@triton.jit
def partial_rows(PARTIAL, i_bh64, Tq, R, MOD: tl.constexpr, S: tl.constexpr):
    """This (b, h)'s rows of a (B, H, Tq, width) gradient partial: width R for relpos, S for decay."""
    if MOD == MOD_RELPOS:
        return PARTIAL + i_bh64 * Tq * R
    else:
        return PARTIAL + i_bh64 * Tq * S


@triton.jit
def grad_init(BLOCK_M: tl.constexpr, MOD: tl.constexpr, S_PAD: tl.constexpr):
    """The dQ pass's per-row gradient accumulators (g0, g1) of the modifier."""
    if MOD == MOD_DECAY:
        return tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32), tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32)
    else:  # relpos: g0 is the row sum of the shared last column; none: unused
        return tl.zeros([BLOCK_M], dtype=tl.float32), tl.zeros([BLOCK_M], dtype=tl.float32)


@triton.jit
def grad_tile(g0, g1, PARTIAL_0, PARTIAL_1, PARAM_0, PARAM_1, b_ds, ok, i_h, o_m, p_m, o_n, Tk, TIMES_ROW, R,
              log_eps, MOD: tl.constexpr, S: tl.constexpr, S_PAD: tl.constexpr, HAS_TIMES: tl.constexpr,
              HAS_EPS: tl.constexpr):
    """Fold one tile's dS (0 where not admissible) into the accumulators; PARTIAL_*: this (b, h)'s rows."""
    if MOD == MOD_RELPOS:
        g0 = relpos_grad_tile(PARTIAL_0, g0, b_ds, ok, o_m, p_m, o_n, R)
    elif MOD == MOD_DECAY:
        g0, g1 = decay_grad_tile(g0, g1, PARAM_0, PARAM_1, b_ds, i_h, p_m, o_n, Tk, TIMES_ROW, log_eps, S, S_PAD,
                                 HAS_TIMES, HAS_EPS)
    return g0, g1


@triton.jit
def grad_store(g0, g1, PARTIAL_0, PARTIAL_1, o_m, Tq, R, MOD: tl.constexpr, S: tl.constexpr, S_PAD: tl.constexpr):
    if MOD == MOD_RELPOS:
        relpos_grad_store(PARTIAL_0, g0, o_m, Tq, R)
    elif MOD == MOD_DECAY:
        decay_grad_store(PARTIAL_0, PARTIAL_1, g0, g1, o_m, Tq, S, S_PAD)
