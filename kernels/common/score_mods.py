"""Score modifiers of the tiled core, selected by the ``MOD`` constexpr.

MOD_NONE: masked_sdpa. MOD_RELPOS: rel_bias[h, min(Delta, R - 1)]. MOD_DECAY:
logaddexp(logsumexp_s(log a_hs + log_gamma_hs * Delta), log eps) with Delta from
positions or timestamps. Each modifier also has the hooks its parameter gradients need.
"""
import triton
import triton.language as tl

MOD_NONE = 0
MOD_RELPOS = 1
MOD_DECAY = 2


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
def decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 Delta clamped at 0."""
    if HAS_TIMES:
        b_tq = tl.load(TIMES_ROW + p_m, mask=(p_m >= 0) & (p_m < Tk), other=0.0).to(tl.float32)
        b_tk = tl.load(TIMES_ROW + o_n, mask=o_n < Tk, other=0.0).to(tl.float32)
        delta = b_tq[:, None] - b_tk[None, :]
    else:
        delta = (p_m[:, None] - o_n[None, :]).to(tl.float32)
    return tl.maximum(delta, 0.0)


@triton.jit
def decay_term(LOG_GAMMA, LOG_ALPHA, i_h, s, S: tl.constexpr, delta):
    """log a_hs + log_gamma_hs * Delta for scale ``s``."""
    b_lg = tl.load(LOG_GAMMA + i_h * S + s).to(tl.float32)
    b_la = tl.load(LOG_ALPHA + i_h * S + s).to(tl.float32)
    return b_la + b_lg * delta


@triton.jit
def decay_bias(LOG_GAMMA, LOG_ALPHA, i_h, delta, log_eps, S: tl.constexpr, HAS_EPS: tl.constexpr):
    m_mix = decay_term(LOG_GAMMA, LOG_ALPHA, i_h, 0, S, delta)
    for s in tl.static_range(1, S):
        m_mix = tl.maximum(m_mix, decay_term(LOG_GAMMA, LOG_ALPHA, i_h, s, S, delta))
    total = tl.zeros_like(delta)
    for s in tl.static_range(S):
        total += tl.exp(decay_term(LOG_GAMMA, LOG_ALPHA, i_h, s, S, delta) - m_mix)
    mix = m_mix + tl.log(total)
    if HAS_EPS:
        top = tl.maximum(mix, log_eps)
        mix = top + tl.log(tl.exp(mix - top) + tl.exp(log_eps - top))
    return mix


@triton.jit
def score_mod(p_m, o_n, i_h, Tk, MOD_A, MOD_B, TIMES_ROW, R, log_eps, MOD: tl.constexpr, S: tl.constexpr,
              HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 modifier m_ij (MOD_A/MOD_B: rel_bias or log_gamma/log_alpha)."""
    if MOD == 1:
        index = tl.minimum(tl.maximum(p_m[:, None] - o_n[None, :], 0), R - 1)
        return tl.load(MOD_A + i_h * R + index).to(tl.float32)
    elif MOD == 2:
        delta = decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES)
        return decay_bias(MOD_A, MOD_B, i_h, delta, log_eps, S, HAS_EPS)
    else:
        return tl.zeros((p_m.shape[0], o_n.shape[0]), dtype=tl.float32)


@triton.jit
def dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n):
    """[BLOCK_M, BLOCK_N] bool: Philox4x32-10 of counter (j, i, h, b) >= threshold (see tempattn philox.py)."""
    zeros = tl.zeros((o_m.shape[0], o_n.shape[0]), dtype=tl.uint32)
    c0 = zeros + o_n[None, :].to(tl.uint32)
    c1 = zeros + o_m[:, None].to(tl.uint32)
    word, _, _, _ = tl.philox(seed, c0, c1, zeros + i_h.to(tl.uint32), zeros + i_b.to(tl.uint32))
    return (word.to(tl.int64) & 0xFFFFFFFF) >= drop_thr
