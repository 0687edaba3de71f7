"""Score modifiers of the tiled core, one set of jit functions each, selected by the ``MOD`` constexpr.

A modifier adds ``m_ij`` (natural log; the core turns it to base 2) to the scores and, if it has
parameters, accumulates their gradient from ``dS`` in the dQ pass as per-query-tile *partials*
(``nT = cdiv(Tq, BLOCK_M)`` rows per (b, h)) that the host reduces in a fixed order. Its parameters
occupy the core's two modifier pointer slots ``PARAM_0`` / ``PARAM_1``:

=================  ===========================  ======================================  ========================
modifier           PARAM_0, PARAM_1             m_ij                                     gradient partials
=================  ===========================  ======================================  ========================
``MOD_NONE``       unused                       0                                        none
``MOD_RELPOS``     rel_bias (H, R), unused      rel_bias[h, min(Delta, R - 1)]           band (B, H, nT, R)
``MOD_DECAY``      log_gamma, log a (H, S)      logaddexp(logsumexp_s(log a_s +          d log_gamma, d log a
                                                log_gamma_s * Delta), log eps)           (B, H, nT, S) each
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
    """[BLOCK_M, BLOCK_N] bool: in range, key valid, 0 <= Delta (CAUSAL), Delta <= window (WINDOWED)."""
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
    return word >= drop_thr.to(tl.uint32)  # unsigned 32-bit compare (drop_thr < 2^32)


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
def relpos_grad_tile(TILE_ROW, carry, tail, b_ds, c, R, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold one (query tile, key tile) pair's dS into the query tile's band row ``TILE_ROW`` (R floats).

    Row i and key column j of the pair have Delta = c + i - j (c: the tile's first row position minus
    the key tile's first key). Its diagonal sums split into ``upper`` (Delta = c + t, t in [0, BLOCK_N))
    and ``lower`` (Delta = c - BLOCK_N + t). The key tiles come in steps of BLOCK_N, so the previous
    tile's lower part covers this tile's upper Delta range exactly (BLOCK_M <= BLOCK_N): upper + carry
    is final and stored once, at Delta < R - 1 (the last, shared column sums in ``tail``), and lower
    is the next carry. Fixed order, nothing accumulated in memory.
    """
    i = tl.arange(0, BLOCK_M)[:, None]
    t = tl.arange(0, BLOCK_N)[None, :]
    col_u = i - t  # upper: dS[i, i - t] where 0 <= i - t (< BLOCK_N as BLOCK_M <= BLOCK_N)
    upper = tl.sum(tl.where(col_u >= 0, tl.gather(b_ds, tl.maximum(col_u, 0), 1), 0.0), 0)
    col_l = i - t + BLOCK_N  # lower: dS[i, i - t + BLOCK_N] where i < t
    lower = tl.sum(tl.where(col_l < BLOCK_N, tl.gather(b_ds, tl.minimum(col_l, BLOCK_N - 1), 1), 0.0), 0)
    chunk = upper + carry
    delta = c + tl.arange(0, BLOCK_N)
    tl.store(TILE_ROW + delta, chunk.to(TILE_ROW.dtype.element_ty), mask=(delta >= 0) & (delta < R - 1))
    return lower, tail + tl.where(delta >= R - 1, chunk, 0.0)


@triton.jit
def relpos_grad_finish(TILE_ROW, carry, tail, c_last, R, BLOCK_N: tl.constexpr):
    """Store the last key tile's lower part (Delta = c_last - BLOCK_N + t) and the shared last column."""
    delta = c_last - BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(TILE_ROW + delta, carry.to(TILE_ROW.dtype.element_ty), mask=(delta >= 0) & (delta < R - 1))
    tail += tl.where(delta >= R - 1, carry, 0.0)
    tl.store(TILE_ROW + R - 1, tl.sum(tail, 0).to(TILE_ROW.dtype.element_ty))


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
def decay_grad_store(D_LOG_GAMMA_TILE, D_LOG_A_TILE, d_log_gamma, d_log_a, o_m, Tq, S: tl.constexpr,
                     S_PAD: tl.constexpr):
    """Sum the rows in range and store the query tile's (S,) partials."""
    o_s = tl.arange(0, S_PAD)
    rows = (o_m < Tq)[:, None]
    tl.store(D_LOG_GAMMA_TILE + o_s, tl.sum(tl.where(rows, d_log_gamma, 0.0), 0), mask=o_s < S)
    tl.store(D_LOG_A_TILE + o_s, tl.sum(tl.where(rows, d_log_a, 0.0), 0), mask=o_s < S)


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
def partial_tile(PARTIAL, i_bh64, i_m, Tq, R, MOD: tl.constexpr, S: tl.constexpr, BLOCK_M: tl.constexpr):
    """This query tile's row of a (B, H, cdiv(Tq, BLOCK_M), width) partial: width R for relpos, S for decay."""
    row = i_bh64 * tl.cdiv(Tq, BLOCK_M) + i_m
    if MOD == MOD_RELPOS:
        return PARTIAL + row * R
    else:
        return PARTIAL + row * S


@triton.jit
def grad_init(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MOD: tl.constexpr, S_PAD: tl.constexpr):
    """The dQ pass's gradient accumulators (g0, g1) of the modifier."""
    if MOD == MOD_DECAY:
        return tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32), tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32)
    else:  # relpos: g0 the carried lower diagonal sums, g1 the shared last column's; none: unused
        return tl.zeros([BLOCK_N], dtype=tl.float32), tl.zeros([BLOCK_N], dtype=tl.float32)


@triton.jit
def grad_tile(g0, g1, PARTIAL_0, PARTIAL_1, PARAM_0, PARAM_1, b_ds, i_h, p_m, o_n, c, Tk, TIMES_ROW, R, log_eps,
              MOD: tl.constexpr, S: tl.constexpr, S_PAD: tl.constexpr, HAS_TIMES: tl.constexpr,
              HAS_EPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold one tile's dS (0 where not admissible) into the accumulators. PARTIAL_*: this query tile's row;
    c: the tile's first row position minus the key tile's first key. Key tiles come in order, BLOCK_N apart."""
    if MOD == MOD_RELPOS:
        g0, g1 = relpos_grad_tile(PARTIAL_0, g0, g1, b_ds, c, R, BLOCK_M, BLOCK_N)
    elif MOD == MOD_DECAY:
        g0, g1 = decay_grad_tile(g0, g1, PARAM_0, PARAM_1, b_ds, i_h, p_m, o_n, Tk, TIMES_ROW, log_eps, S, S_PAD,
                                 HAS_TIMES, HAS_EPS)
    return g0, g1


@triton.jit
def grad_finish(g0, g1, PARTIAL_0, PARTIAL_1, o_m, c_last, Tq, R, MOD: tl.constexpr, S: tl.constexpr,
                S_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """Store the query tile's partials; c_last: ``c`` of the last key tile visited."""
    if MOD == MOD_RELPOS:
        relpos_grad_finish(PARTIAL_0, g0, g1, c_last, R, BLOCK_N)
    elif MOD == MOD_DECAY:
        decay_grad_store(PARTIAL_0, PARTIAL_1, g0, g1, o_m, Tq, S, S_PAD)
