"""The tiled online-softmax attention kernels (forward, dK/dV, dQ) shared by the three operators.

Grid: (query or key tiles, B * H). q/k/v/do may have any strides but the last; all
offsets are int64. Parameter gradients are written per row (dQ pass) or per key
(dK/dV pass) and reduced on the host in a fixed order: no atomics, so the backward is
bitwise reproducible.
"""
import triton
import triton.language as tl

from .score_mods import admissible, decay_bias, decay_offsets, decay_term, dropout_keep, score_mod


@triton.jit
def _tile(PTR, o_r, o_c, stride_r, n_r, n_c):
    """Load a [rows, cols] tile, zero outside (n_r, n_c)."""
    ptrs = PTR + o_r[:, None].to(tl.int64) * stride_r + o_c[None, :]
    return tl.load(ptrs, mask=(o_r[:, None] < n_r) & (o_c[None, :] < n_c), other=0.0)


@triton.jit
def _store_tile(PTR, value, o_r, o_c, stride_r, n_r, n_c):
    ptrs = PTR + o_r[:, None].to(tl.int64) * stride_r + o_c[None, :]
    tl.store(ptrs, value.to(PTR.dtype.element_ty), mask=(o_r[:, None] < n_r) & (o_c[None, :] < n_c))


@triton.jit
def _key_range(i_m, Tq, Tk, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               WINDOWED: tl.constexpr):
    """[lo, hi) of the key tiles a query tile can attend to (causal and window skipping)."""
    lo = 0
    hi = Tk
    if CAUSAL:
        hi = tl.minimum(Tk, (i_m + 1) * BLOCK_M + Tk - Tq)
    if WINDOWED:
        lo = tl.maximum(0, i_m * BLOCK_M + Tk - Tq - window) // BLOCK_N * BLOCK_N
    return lo, hi


@triton.jit
def _query_range(i_n, Tq, Tk, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                 WINDOWED: tl.constexpr):
    """[lo, hi) of the query tiles that can attend to a key tile."""
    lo = 0
    hi = Tq
    if CAUSAL:
        lo = tl.maximum(0, i_n * BLOCK_N - (Tk - Tq)) // BLOCK_M * BLOCK_M
    if WINDOWED:
        hi = tl.minimum(Tq, (i_n + 1) * BLOCK_N + window - (Tk - Tq))
    return lo, hi


@triton.jit
def _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, MOD_A, MOD_B, TIMES_ROW, R, log_eps,
            window, MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
            HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr,
            PRECISION: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 scores with every modifier, -inf where not admissible."""
    s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * scale
    s += score_mod(p_m, o_n, i_h, Tk, MOD_A, MOD_B, TIMES_ROW, R, log_eps, MOD, S, HAS_TIMES, HAS_EPS)
    if HAS_BIAS:
        s += tl.load(KB_ROW + o_n, mask=o_n < Tk, other=0.0).to(tl.float32)[None, :]
    ok = admissible(o_m, p_m, o_n, Tq, Tk, VALID_ROW, window, CAUSAL, WINDOWED, HAS_VALID)
    return tl.where(ok, s, float("-inf"))


@triton.jit
def attention_fwd_kernel(
    Q, K, V, OUT, LSE, VALID, KEY_BIAS, MOD_A, MOD_B, TIMES,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    H, Tq, Tk, D, DV, R, window, scale, log_eps, seed, drop_thr, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
):
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    p_m = o_m + (Tk - Tq)
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    b_q = _tile(Q + i_b64 * stride_qb + i_h64 * stride_qh, o_m, o_d, stride_qm, Tq, D)
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh.to(tl.int64) * Tk

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_V], dtype=tl.float32)
    lo, hi = _key_range(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    for n0 in range(lo, hi, BLOCK_N):
        o_n = n0 + tl.arange(0, BLOCK_N)
        b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D)
        b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV)
        s = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, MOD_A, MOD_B, TIMES_ROW, R,
                    log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: keep exp() at 0, not NaN
        b_p = tl.exp(s - m_use[:, None])
        alpha = tl.exp(m_i - m_use)
        l_i = l_i * alpha + tl.sum(b_p, 1)
        if DROPOUT:
            b_p = tl.where(dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n), b_p * drop_scale, 0.0)
        acc = acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)
        m_i = m_new

    nonempty = l_i > 0
    l_safe = tl.where(nonempty, l_i, 1.0)
    out = tl.where(nonempty[:, None], acc / l_safe[:, None], 0.0)
    _store_tile(OUT + i_b64 * stride_ob + i_h64 * stride_oh, out, o_m, o_dv, stride_om, Tq, DV)
    lse = tl.where(nonempty, m_i + tl.log(l_safe), float("-inf"))
    tl.store(LSE + i_bh.to(tl.int64) * Tq + o_m, lse, mask=o_m < Tq)


@triton.jit
def _probabilities(s, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                   DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """(P after dropout, dS) of a tile, recomputed from the saved row log-sum-exp."""
    b_lse = tl.where(b_lse == float("-inf"), 0.0, b_lse)  # empty rows: every s is -inf, so P stays 0
    b_p = tl.exp(s - b_lse[:, None])
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
    b_pd = b_p
    if DROPOUT:
        keep = dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n)
        b_pd = tl.where(keep, b_p * drop_scale, 0.0)
        b_dp = tl.where(keep, b_dp * drop_scale, 0.0)
    return b_pd, b_p * (b_dp - b_delta[:, None])


@triton.jit
def attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DKB, VALID, KEY_BIAS, MOD_A, MOD_B, TIMES,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    H, Tq, Tk, D, DV_DIM, R, window, scale, log_eps, seed, drop_thr, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
):
    """dK, dV (contiguous (B, H, Tk, .)) and d key_bias (B, H, Tk) for one key tile."""
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    b_k = _tile(K + i_b64 * stride_kb + i_h64 * stride_kh, o_n, o_d, stride_kn, Tk, D)
    b_v = _tile(V + i_b64 * stride_vb + i_h64 * stride_vh, o_n, o_dv, stride_vn, Tk, DV_DIM)
    Q_BH, DO_BH = Q + i_b64 * stride_qb + i_h64 * stride_qh, DO + i_b64 * stride_dob + i_h64 * stride_doh
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_V], dtype=tl.float32)
    dkb = tl.zeros([BLOCK_N], dtype=tl.float32)
    lo, hi = _query_range(i_n, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    for m0 in range(lo, hi, BLOCK_M):
        o_m = m0 + tl.arange(0, BLOCK_M)
        p_m = o_m + (Tk - Tq)
        b_q = _tile(Q_BH, o_m, o_d, stride_qm, Tq, D)
        b_do = _tile(DO_BH, o_m, o_dv, stride_dom, Tq, DV_DIM)
        b_lse = tl.load(LSE + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
        b_delta = tl.load(DELTA + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
        s = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, MOD_A, MOD_B, TIMES_ROW, R,
                    log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, PRECISION)
        b_pd, b_ds = _probabilities(s, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                                    DROPOUT, PRECISION)
        dv += tl.dot(tl.trans(b_pd).to(b_do.dtype), b_do, input_precision=PRECISION)
        dk += tl.dot(tl.trans(b_ds).to(b_q.dtype), b_q, input_precision=PRECISION)
        if HAS_BIAS:
            dkb += tl.sum(b_ds, 0)
    _store_tile(DK + i_bh64 * Tk * D, dk * scale, o_n, o_d, D, Tk, D)
    _store_tile(DV + i_bh64 * Tk * DV_DIM, dv, o_n, o_dv, DV_DIM, Tk, DV_DIM)
    if HAS_BIAS:
        tl.store(DKB + i_bh64 * Tk + o_n, dkb, mask=o_n < Tk)


@triton.jit
def attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DMOD_A, DMOD_B, VALID, KEY_BIAS, MOD_A, MOD_B, TIMES,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    H, Tq, Tk, D, DV_DIM, R, window, scale, log_eps, seed, drop_thr, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr, S_PAD: tl.constexpr,
):
    """dQ (contiguous) for one query tile, plus per-row modifier gradients.

    relpos: DMOD_A is a zeroed (B, H, Tq, R) band; dS_ij is stored at [i, Delta_ij] for
    Delta < R - 1 (one key per (row, Delta), so no accumulation) and the row's sum over
    Delta >= R - 1 at [i, R - 1]. decay: DMOD_A / DMOD_B are (B, H, Tq, S) row sums of
    dS * r_s * Delta and dS * r_s, with r_s = exp(log a_s + log_gamma_s * Delta - m).
    """
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    p_m = o_m + (Tk - Tq)
    o_d, o_dv, o_s = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V), tl.arange(0, S_PAD)
    b_q = _tile(Q + i_b64 * stride_qb + i_h64 * stride_qh, o_m, o_d, stride_qm, Tq, D)
    b_do = _tile(DO + i_b64 * stride_dob + i_h64 * stride_doh, o_m, o_dv, stride_dom, Tq, DV_DIM)
    b_lse = tl.load(LSE + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
    b_delta = tl.load(DELTA + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    d_tail = tl.zeros([BLOCK_M], dtype=tl.float32)
    d_log_gamma = tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32)
    d_log_alpha = tl.zeros([BLOCK_M, S_PAD], dtype=tl.float32)
    lo, hi = _key_range(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    for n0 in range(lo, hi, BLOCK_N):
        o_n = n0 + tl.arange(0, BLOCK_N)
        b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D)
        b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV_DIM)
        s = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, MOD_A, MOD_B, TIMES_ROW, R,
                    log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, PRECISION)
        _, b_ds = _probabilities(s, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                                 DROPOUT, PRECISION)
        dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
        if MOD == 1:
            distance = p_m[:, None] - o_n[None, :]
            band = DMOD_A + i_bh64 * Tq * R + o_m[:, None].to(tl.int64) * R + distance
            tl.store(band, b_ds, mask=(s != float("-inf")) & (distance < R - 1))
            d_tail += tl.sum(tl.where(distance >= R - 1, b_ds, 0.0), 1)
        elif MOD == 2:
            dist = decay_offsets(p_m, o_n, Tk, TIMES_ROW, HAS_TIMES)
            b_mod = decay_bias(MOD_A, MOD_B, i_h, dist, log_eps, S, HAS_EPS)
            for i_s in tl.static_range(S):
                b_w = b_ds * tl.exp(decay_term(MOD_A, MOD_B, i_h, i_s, S, dist) - b_mod)
                pick = (o_s == i_s)[None, :]
                d_log_alpha += tl.where(pick, tl.sum(b_w, 1)[:, None], 0.0)
                d_log_gamma += tl.where(pick, tl.sum(b_w * dist, 1)[:, None], 0.0)
    _store_tile(DQ + i_bh64 * Tq * D, dq * scale, o_m, o_d, D, Tq, D)
    if MOD == 1:
        tl.store(DMOD_A + i_bh64 * Tq * R + o_m.to(tl.int64) * R + R - 1, d_tail, mask=o_m < Tq)
    elif MOD == 2:
        _store_tile(DMOD_A + i_bh64 * Tq * S, d_log_gamma, o_m, o_s, S, Tq, S)
        _store_tile(DMOD_B + i_bh64 * Tq * S, d_log_alpha, o_m, o_s, S, Tq, S)
