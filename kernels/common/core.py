"""The tiled online-softmax attention kernels (forward, dK/dV, dQ) shared by the three operators.

Grid: (query or key tiles, B * H). q/k/v/do may have any strides but the last; all
offsets are int64. Parameter gradients are written per row (dQ pass) or per key
(dK/dV pass) and reduced on the host in a fixed order: no atomics, so the backward is
bitwise reproducible. The score modifier (``MOD``, see score_mods.py) reads its parameters
from ``PARAM_0`` / ``PARAM_1`` and writes its gradient partials to ``PARTIAL_0`` / ``PARTIAL_1``.

Non-finite inputs (docs/contract.md): admissibility (masks, causal, window) is tracked apart from the
score value, so a NaN score propagates instead of removing its key, and every product whose
left operand is zero outside the admissible set goes through ``_dot_admissible`` so that a
non-finite q / k / v / dO never leaks into rows or keys that cannot see it.
"""
import triton
import triton.language as tl

from .score_mods import admissible, dropout_keep, grad_init, grad_store, grad_tile, partial_rows, score_mod

FLT_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)  # the largest finite float32


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
def _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R, log_eps,
            window, MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
            HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr,
            PRECISION: tl.constexpr):
    """([BLOCK_M, BLOCK_N] float32 scores with every modifier, -inf where not admissible; admissibility).

    Admissibility comes from the masks, causality and the window only: a NaN or infinite score of an
    admissible key stays in ``s`` and propagates, it never makes the key inadmissible.
    """
    s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * scale
    s += score_mod(PARAM_0, PARAM_1, i_h, p_m, o_n, Tk, TIMES_ROW, R, log_eps, MOD, S, HAS_TIMES, HAS_EPS)
    if HAS_BIAS:
        s += tl.load(KB_ROW + o_n, mask=o_n < Tk, other=0.0).to(tl.float32)[None, :]
    ok = admissible(o_m, p_m, o_n, Tq, Tk, VALID_ROW, window, CAUSAL, WINDOWED, HAS_VALID)
    return tl.where(ok, s, float("-inf")), ok


@triton.jit
def _dot_admissible(acc, a, b, ok, PRECISION: tl.constexpr):
    """acc + a @ b, where ``a`` is a probability / dS tile that is 0 wherever ``ok`` is False.

    A plain dot would turn a non-finite b[j, d] into 0 * NaN = NaN for every row i of the tile,
    also rows that cannot see j. b is taken with its non-finite entries zeroed, and only a tile that
    holds one adds their products over the admissible (i, j) (``_non_finite_products``).
    """
    finite = tl.abs(b) < float("inf")  # False for NaN and +-inf
    acc += tl.dot(a.to(b.dtype), tl.where(finite, b, 0.0).to(b.dtype), input_precision=PRECISION)
    if tl.min(finite.to(tl.int32)) == 0:
        acc += _non_finite_products(a, b, ok)
    return acc


@triton.jit
def _non_finite_products(a, b, ok):
    """sum_j a[i, j] * b[j, d] over the admissible (i, j) and the non-finite b[j, d] only, as IEEE gives it
    for a >= 0: +inf / -inf where positive a meet infinities of one sign, NaN where they meet both, where
    b is NaN, or where an a <= 0 or NaN meets an infinity (0 * inf; a negative a also reads NaN there).

    One dot counts the cases exactly: left 1 (a > 0) or 2^14 (other admissible), right 1 (+inf), 2^7
    (-inf) or 2^14 (NaN), so c < 2^14 is 128 * (#-inf) + (#+inf) over positive a, and c >= 2^14 is NaN.
    """
    left = tl.where(ok & (a > 0), 1.0, tl.where(ok, 16384.0, 0.0)).to(tl.float16)
    right = tl.where(b == float("inf"), 1.0, tl.where(b == float("-inf"), 128.0, tl.where(b != b, 16384.0, 0.0)))
    c = tl.dot(left, right.to(tl.float16))  # 0/1/2^7/2^14 operands: exact in float16, float32 accumulation
    n = tl.minimum(c, 16383.0).to(tl.int32)
    pos, neg = (n & 127) > 0, n >= 128
    value = tl.where(neg, float("-inf"), tl.where(pos, float("inf"), 0.0))
    return tl.where((c >= 16384.0) | (pos & neg), float("nan"), value)


@triton.jit
def attention_fwd_kernel(
    Q, K, V, OUT, LSE, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES,
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
        s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                        R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                        PRECISION)
        # m_i is the running max of the non-NaN scores (never NaN: tl.max skips NaN, and an all-NaN
        # tile row counts as -inf), so it may jump by any amount and alpha = exp(m_i - m_new) stays
        # exact (0 for a jump past ~104). A NaN score reaches l_i and acc through its p = exp(NaN).
        # A +inf score is clamped to FLT_MAX (NaN kept), so that it weighs exp(0) = 1 instead of
        # exp(inf - inf) = NaN and l_i keeps telling NaN rows apart; m_i = FLT_MAX marks its row.
        s = tl.minimum(s, FLT_MAX, propagate_nan=tl.PropagateNan.ALL)
        m_tile = tl.max(s, 1)
        m_new = tl.maximum(m_i, tl.where(m_tile == m_tile, m_tile, float("-inf")))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing above -inf so far: exp() gives 0, not NaN
        b_p = tl.exp(s - m_use[:, None])
        alpha = tl.exp(m_i - m_use)
        l_i = l_i * alpha + tl.sum(b_p, 1)
        if DROPOUT:
            b_p = tl.where(dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n), b_p * drop_scale, 0.0)
        acc = _dot_admissible(acc * alpha[:, None], b_p, b_v, ok, PRECISION)
        m_i = m_new

    # l_i == 0 exactly iff the row has no admissible key (or only keys at -inf, e.g. key_bias = -inf):
    # out = 0 (acc is 0 there, unless a non-finite v of an admissible key made it NaN) and lse = -inf.
    # A NaN score makes l_i NaN, which is not == 0: out and lse are NaN. A +inf score (m_i = FLT_MAX)
    # gives out = NaN (softmax's inf - inf) and lse = +inf (NaN if the row also has a NaN score), so
    # the backward's P = exp(s - lse) is 0 for the row's finite scores, as for any other row.
    empty = l_i == 0.0
    inf_row = m_i == FLT_MAX
    out = tl.where(inf_row[:, None], float("nan"), acc / tl.where(empty, 1.0, l_i)[:, None])
    _store_tile(OUT + i_b64 * stride_ob + i_h64 * stride_oh, out, o_m, o_dv, stride_om, Tq, DV)
    lse = tl.where(inf_row, tl.where(l_i == l_i, float("inf"), float("nan")), m_i + tl.log(l_i))
    lse = tl.where(empty, float("-inf"), lse)
    tl.store(LSE + i_bh.to(tl.int64) * Tq + o_m, lse, mask=o_m < Tq)


@triton.jit
def _probabilities(s, ok, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                   DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """(P after dropout, dS) of a tile, recomputed from the saved row log-sum-exp; both 0 where not ``ok``.

    A NaN row (NaN lse or delta) or a non-finite dO / v gives NaN P / dS on the admissible entries only.
    """
    b_lse = tl.where(b_lse == float("-inf"), 0.0, b_lse)  # empty rows: every s is -inf, so P stays 0
    b_p = tl.where(ok, tl.exp(s - b_lse[:, None]), 0.0)
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
    b_pd = b_p
    if DROPOUT:
        keep = dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n)
        b_pd = tl.where(keep, b_p * drop_scale, 0.0)
        b_dp = tl.where(keep, b_dp * drop_scale, 0.0)
    return b_pd, tl.where(ok, b_p * (b_dp - b_delta[:, None]), 0.0)


@triton.jit
def attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DKB, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES,
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
        s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                        R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                        PRECISION)
        b_pd, b_ds = _probabilities(s, ok, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr,
                                    drop_scale, DROPOUT, PRECISION)
        ok_t = tl.trans(ok)
        dv = _dot_admissible(dv, tl.trans(b_pd), b_do, ok_t, PRECISION)
        dk = _dot_admissible(dk, tl.trans(b_ds), b_q, ok_t, PRECISION)
        if HAS_BIAS:
            dkb += tl.sum(b_ds, 0)
    _store_tile(DK + i_bh64 * Tk * D, dk * scale, o_n, o_d, D, Tk, D)
    _store_tile(DV + i_bh64 * Tk * DV_DIM, dv, o_n, o_dv, DV_DIM, Tk, DV_DIM)
    if HAS_BIAS:
        tl.store(DKB + i_bh64 * Tk + o_n, dkb, mask=o_n < Tk)


@triton.jit
def attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, PARTIAL_0, PARTIAL_1, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    H, Tq, Tk, D, DV_DIM, R, window, scale, log_eps, seed, drop_thr, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr, S_PAD: tl.constexpr,
):
    """dQ (contiguous) for one query tile, plus the modifier's per-row gradient partials (score_mods.py)."""
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    p_m = o_m + (Tk - Tq)
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    b_q = _tile(Q + i_b64 * stride_qb + i_h64 * stride_qh, o_m, o_d, stride_qm, Tq, D)
    b_do = _tile(DO + i_b64 * stride_dob + i_h64 * stride_doh, o_m, o_dv, stride_dom, Tq, DV_DIM)
    b_lse = tl.load(LSE + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
    b_delta = tl.load(DELTA + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    PARTIAL_0_BH = partial_rows(PARTIAL_0, i_bh64, Tq, R, MOD, S)
    PARTIAL_1_BH = partial_rows(PARTIAL_1, i_bh64, Tq, R, MOD, S)
    g0, g1 = grad_init(BLOCK_M, MOD, S_PAD)
    lo, hi = _key_range(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    for n0 in range(lo, hi, BLOCK_N):
        o_n = n0 + tl.arange(0, BLOCK_N)
        b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D)
        b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV_DIM)
        s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                        R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                        PRECISION)
        _, b_ds = _probabilities(s, ok, b_lse, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                                 DROPOUT, PRECISION)
        dq = _dot_admissible(dq, b_ds, b_k, ok, PRECISION)
        g0, g1 = grad_tile(g0, g1, PARTIAL_0_BH, PARTIAL_1_BH, PARAM_0, PARAM_1, b_ds, ok, i_h, o_m, p_m, o_n, Tk,
                           TIMES_ROW, R, log_eps, MOD, S, S_PAD, HAS_TIMES, HAS_EPS)
    _store_tile(DQ + i_bh64 * Tq * D, dq * scale, o_m, o_d, D, Tq, D)
    grad_store(g0, g1, PARTIAL_0_BH, PARTIAL_1_BH, o_m, Tq, R, MOD, S, S_PAD)
