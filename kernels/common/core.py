"""The tiled online-softmax attention kernels (forward, dK/dV, dQ) shared by the three operators.

Grid: (query or key tiles, B * H). q/k/v/do may have any strides but the last; all
offsets are int64. Parameter gradients are written per query tile (dQ pass) or per key
(dK/dV pass) and reduced on the host in a fixed order: no atomics, so the backward is
bitwise reproducible. The score modifier (``MOD``, see score_mods.py) reads its parameters
from ``PARAM_0`` / ``PARAM_1`` and writes its gradient partials to ``PARTIAL_0`` / ``PARTIAL_1``.

Scores are kept in base 2 (FlashAttention-2): ``s2 = log2(e) * (scale * q.k + m_ij + key_bias_j)``
with log2(e) folded into the dot's scale, so every exponential is an ``exp2``; lse is stored in
natural log. Each loop over key (or query) tiles is split by the masks its tiles need
(``_key_ranges`` / ``_query_ranges``): the tiles that causality and the window admit whole skip both
comparisons, the tiles on the causal diagonal get the causal one, the tiles across the window's edge
the window's (the bounds and the key mask stay everywhere).

Non-finite inputs (docs/contract.md): admissibility (masks, causal, window) is tracked apart from the
score value, so a NaN score propagates instead of removing its key. The loops use plain dots, where
a non-finite v (k, q, dO) would leak as 0 * NaN into rows (keys) that cannot see it; it always leaves
those rows of the accumulator non-finite. Each kernel flags such rows (keys) in ``REDO`` (int8, one per
row), and a second launch of the same kernel with ``REDO_PASS`` computes exactly the flagged rows again
by an exact pass (``_fwd_exact``, ``_dkdv_exact``, ``_dq_exact``: one row or key at a time, IEEE
products over the admissible pairs only, no tensor cores). Rows of finite inputs are never flagged, and a
tile without a flagged row reads its flags only. (Inlined after the loop, the exact pass kept its
pointers and bounds live across the loop: ptxas spilled in dozens of specialisations.)
"""
import triton
import triton.language as tl

from .score_mods import (MOD_NONE, admissible, dropout_keep, grad_finish, grad_init, grad_tile, partial_tile,
                         score_mod)

FLT_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)  # the largest finite float32
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


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
def _rows(PTR, DESC, i_b, i_h, r0, stride_r, n_r, n_c, ROWS: tl.constexpr, COLS: tl.constexpr,
          USE_TMA: tl.constexpr):
    """The [ROWS, COLS] tile of rows r0.. of one (batch, head), zero outside (n_r, n_c): by its tensor
    descriptor ``DESC`` ((B, H, T, D), block [1, 1, ROWS, COLS]: a TMA copy on sm_90, which zero-fills
    out of bounds itself) where ``USE_TMA``, else by pointers from that (batch, head)'s base ``PTR``."""
    if USE_TMA:
        tile = tl.reshape(DESC.load([i_b, i_h, r0, 0]), [ROWS, COLS])
    else:
        tile = _tile(PTR, r0 + tl.arange(0, ROWS), tl.arange(0, COLS), stride_r, n_r, n_c)
    return tile


@triton.jit
def _key_ranges(i_m, Tq, Tk, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                WINDOWED: tl.constexpr):
    """(lo, a, b, hi): the key tiles of query tile i_m, split by the masks they need. [lo, hi) holds every
    key tile the query tile may admit; [lo, a) cross the window's edge (window mask; they lie below the
    causal diagonal); [a, b) are admitted whole by the window and causality (neither mask); [b, hi) lie on
    the causal diagonal (causal mask, and the window's where WINDOWED). Without a window a = lo, without
    causality b = hi. lo, a and b are multiples of BLOCK_N (or hi), so the three loops visit lo,
    lo + BLOCK_N, ... in order, every tile once."""
    first = i_m * BLOCK_M + (Tk - Tq)  # the tile's first row position
    last = first + BLOCK_M - 1
    lo = 0
    hi = Tk
    if CAUSAL:
        hi = tl.minimum(Tk, last + 1)
    if WINDOWED:
        lo = tl.maximum(0, first - window) // BLOCK_N * BLOCK_N
    hi = tl.maximum(hi, lo)
    b = hi
    if CAUSAL:  # whole below the diagonal: n0 + BLOCK_N - 1 <= first
        b = tl.maximum(tl.minimum(tl.maximum(first + 1, 0) // BLOCK_N * BLOCK_N, hi), lo)
    a = lo
    if WINDOWED:  # whole inside the window: n0 >= last - window
        a = tl.minimum(tl.maximum(tl.cdiv(tl.maximum(last - window, 0), BLOCK_N) * BLOCK_N, lo), b)
    return lo, a, b, hi


@triton.jit
def _query_ranges(i_n, Tq, Tk, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                  WINDOWED: tl.constexpr):
    """(lo, b, c, hi): the query tiles of key tile i_n, split by the masks they need. [lo, b) lie on the
    causal diagonal (causal mask, and the window's where WINDOWED); [b, c) are admitted whole (neither
    mask); [c, hi) cross the window's edge (window mask). Without causality b = lo, without a window
    c = hi. lo, b and c are multiples of BLOCK_M (or hi)."""
    n0 = i_n * BLOCK_N
    shift = Tk - Tq
    lo = 0
    hi = Tq
    if CAUSAL:
        lo = tl.maximum(0, n0 - shift) // BLOCK_M * BLOCK_M
    if WINDOWED:
        hi = tl.minimum(Tq, n0 + BLOCK_N + window - shift)
    hi = tl.maximum(hi, lo)
    b = lo
    if CAUSAL:  # whole below the diagonal: m0 + shift >= n0 + BLOCK_N - 1
        b = tl.minimum(tl.cdiv(tl.maximum(0, n0 + BLOCK_N - 1 - shift), BLOCK_M) * BLOCK_M, hi)
    c = hi
    if WINDOWED:  # whole inside the window: m0 + BLOCK_M - 1 + shift <= n0 + window
        c = tl.minimum(tl.maximum(tl.cdiv(tl.maximum(n0 + window - shift - BLOCK_M + 2, 0), BLOCK_M) * BLOCK_M, b),
                       hi)
    return lo, b, c, hi


@triton.jit
def _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, qk_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R,
            log_eps, window, MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
            HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr,
            PRECISION: tl.constexpr):
    """([BLOCK_M, BLOCK_N] float32 base-2 scores with every modifier, -inf where not admissible; admissibility)."""
    s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
    return _modify(s, o_m, p_m, o_n, i_h, Tq, Tk, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R, log_eps, window,
                   MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS)


@triton.jit
def _modify(s, o_m, p_m, o_n, i_h, Tq, Tk, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R, log_eps, window,
            MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
            HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr):
    """The scaled base-2 dot ``s`` ([rows, keys]) with the modifier and the key bias added, -inf where not
    admissible; and the admissibility.

    Admissibility comes from the bounds, masks, causality (``CAUSAL``: False in tiles that it admits
    whole) and the window only: a NaN or infinite score of an admissible key stays in ``s`` and
    propagates, it never makes the key inadmissible.
    """
    if MOD != MOD_NONE:
        s += score_mod(PARAM_0, PARAM_1, i_h, p_m, o_n, Tk, TIMES_ROW, R, log_eps, MOD, S, HAS_TIMES,
                       HAS_EPS) * LOG2E
    if HAS_BIAS:
        s += (tl.load(KB_ROW + o_n, mask=o_n < Tk, other=0.0).to(tl.float32) * LOG2E)[None, :]
    ok = admissible(o_m, p_m, o_n, Tq, Tk, VALID_ROW, window, CAUSAL, WINDOWED, HAS_VALID)
    return tl.where(ok, s, float("-inf")), ok


@triton.jit
def _non_finite_rows(x):
    """[rows] int32: 1 where the row of the tile ``x`` holds a NaN or +-inf, else 0."""
    return tl.max(tl.where(tl.abs(x) < float("inf"), 0, 1), 1)


@triton.jit
def _store_flags(FLAGS, flags, o_r, n_r):
    """The redo flags (int8, one per row) of rows ``o_r`` (< ``n_r``)."""
    tl.store(FLAGS + o_r, flags.to(tl.int8), mask=o_r < n_r)


@triton.jit
def _any_flagged(FLAGS, o_r, n_r):
    """True if a row of ``o_r`` is flagged (a uniform scalar: the whole program branches on it)."""
    return tl.max(tl.load(FLAGS + o_r, mask=o_r < n_r, other=0).to(tl.int32), 0) > 0


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@triton.jit
def _fwd_step(acc, l_i, m_i, n0, b_q, K_BH, V_BH, K_DESC, V_DESC, stride_kn, stride_vn, o_m, p_m, i_b, i_h, Tq,
              Tk, D, DV, R, window, qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0,
              PARAM_1, TIMES_ROW, USE_TMA: tl.constexpr, CAUSAL_MASK: tl.constexpr, MOD: tl.constexpr,
              S: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """One key tile of the forward's online softmax (base 2), with a plain P @ V."""
    o_n = n0 + tl.arange(0, BLOCK_N)
    b_k = _rows(K_BH, K_DESC, i_b, i_h, n0, stride_kn, Tk, D, BLOCK_N, HEAD_DIM, USE_TMA)
    b_v = _rows(V_BH, V_DESC, i_b, i_h, n0, stride_vn, Tk, DV, BLOCK_N, HEAD_DIM_V, USE_TMA)
    s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, qk_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                    R, log_eps, window, MOD, S, CAUSAL_MASK, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                    PRECISION)
    # m_i is the running max of the non-NaN scores (never NaN: tl.max skips NaN, and an all-NaN
    # tile row counts as -inf), so it may jump by any amount and alpha = exp2(m_i - m_new) stays
    # exact (0 for a jump past ~150). A NaN score reaches l_i and acc through its p = exp2(NaN).
    # A +inf score is clamped to FLT_MAX (NaN kept), so that it weighs exp2(0) = 1 instead of
    # exp2(inf - inf) = NaN and l_i keeps telling NaN rows apart; m_i = FLT_MAX marks its row.
    s = tl.minimum(s, FLT_MAX, propagate_nan=tl.PropagateNan.ALL)
    m_tile = tl.max(s, 1)
    m_new = tl.maximum(m_i, tl.where(m_tile == m_tile, m_tile, float("-inf")))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing above -inf so far: exp2() gives 0, not NaN
    b_p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(b_p, 1)
    if DROPOUT:
        b_p = tl.where(dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n), b_p * drop_scale, 0.0)
    acc = tl.dot(b_p.to(b_v.dtype), b_v, acc * alpha[:, None], input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _fwd_exact(m0, lo, hi, REDO_BH, Q_BH, K_BH, V_BH, OUT_BH, LSE_BH, stride_qm, stride_kn, stride_vn, stride_om,
               i_b, i_h, Tq, Tk, D, DV, R, window, qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW,
               PARAM_0, PARAM_1, TIMES_ROW, MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr,
               WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr,
               HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """out of the flagged rows of query tile m0 again, one row at a time, from the stored lse:
    P = exp(s - lse), and out_i = sum over the admissible j of P_ij * v_j with IEEE products
    (0 * NaN = NaN there, and nowhere else). Rare (rows that met a non-finite value), so written for
    few registers and no tensor cores, loops with run-time trip counts."""
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    for i in range(m0, tl.minimum(m0 + BLOCK_M, Tq)):
        if tl.load(REDO_BH + i) != 0:
            o_m = i + tl.arange(0, 1)
            p_m = o_m + (Tk - Tq)
            b_q = tl.reshape(_tile(Q_BH, o_m, o_d, stride_qm, Tq, D), [HEAD_DIM]).to(tl.float32)
            b_lse = tl.load(LSE_BH + o_m)
            b_lse2 = tl.where(b_lse == float("-inf"), 0.0, b_lse * LOG2E)
            acc = tl.zeros([HEAD_DIM_V], dtype=tl.float32)
            for n0 in range(lo, hi, BLOCK_N):
                o_n = n0 + tl.arange(0, BLOCK_N)
                b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D).to(tl.float32)
                b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV).to(tl.float32)
                s = tl.sum(b_k * b_q[None, :], 1)[None, :] * qk_scale
                s, ok = _modify(s, o_m, p_m, o_n, i_h, Tq, Tk, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R,
                                log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS)
                b_p = tl.where(ok, tl.math.exp2(s - b_lse2[:, None]), 0.0)
                if DROPOUT:
                    b_p = tl.where(dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n), b_p * drop_scale, 0.0)
                acc += tl.sum(tl.where(tl.trans(ok), tl.trans(b_p) * b_v, 0.0), 0)
            # NaN / +inf lse: a NaN or +inf score in the row, whose out is NaN
            bad = tl.max(((b_lse != b_lse) | (b_lse == float("inf"))).to(tl.int32), 0) > 0
            acc = tl.where(bad, float("nan"), acc)
            _store_tile(OUT_BH, acc[None, :], o_m, o_dv, stride_om, Tq, DV)


@triton.jit(do_not_specialize=["H", "Tq", "Tk", "R", "window", "seed", "drop_thr", "TQ_BUCKET", "TK_BUCKET"])
def attention_fwd_kernel(
    Q, K, V, OUT, LSE, REDO, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES, K_DESC, V_DESC,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    H, Tq, Tk, D, DV, R, window, scale, log_eps, seed: tl.int64, drop_thr: tl.int64, drop_scale,
    TQ_BUCKET, TK_BUCKET,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr, REDO_PASS: tl.constexpr, USE_TMA: tl.constexpr,
):
    """out and lse for one query tile. TQ_BUCKET / TK_BUCKET: unused here, the autotuner's length key.
    K_DESC / V_DESC: k's and v's tensor descriptors (block [1, 1, BLOCK_N, HEAD_DIM(_V)]) where ``USE_TMA``
    (the loop's tiles come by TMA), else unused.

    The loop uses plain dots and flags in REDO ((B * H, Tq) int8) the rows whose accumulator ended
    non-finite (a non-finite v, or a NaN row); the launch after it (``REDO_PASS``) computes the out of
    the flagged rows again with ``_fwd_exact``.
    """
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    Q_BH = Q + i_b64 * stride_qb + i_h64 * stride_qh
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    OUT_BH, LSE_BH, REDO_BH = OUT + i_b64 * stride_ob + i_h64 * stride_oh, LSE + i_bh64 * Tq, REDO + i_bh64 * Tq
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk
    qk_scale = scale * LOG2E
    lo, a, b, hi = _key_ranges(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    if REDO_PASS:
        if _any_flagged(REDO_BH, o_m, Tq):
            _fwd_exact(i_m * BLOCK_M, lo, hi, REDO_BH, Q_BH, K_BH, V_BH, OUT_BH, LSE_BH, stride_qm, stride_kn,
                       stride_vn, stride_om, i_b, i_h, Tq, Tk, D, DV, R, window, qk_scale, log_eps, seed, drop_thr,
                       drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, MOD, S, CAUSAL, WINDOWED,
                       HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, BLOCK_M, BLOCK_N, HEAD_DIM, HEAD_DIM_V)
    else:
        p_m = o_m + (Tk - Tq)
        o_dv = tl.arange(0, HEAD_DIM_V)
        b_q = _tile(Q_BH, o_m, tl.arange(0, HEAD_DIM), stride_qm, Tq, D)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM_V], dtype=tl.float32)
        if WINDOWED:
            for n0 in range(lo, a, BLOCK_N):  # across the window's edge: window mask
                acc, l_i, m_i = _fwd_step(acc, l_i, m_i, n0, b_q, K_BH, V_BH, K_DESC, V_DESC, stride_kn, stride_vn,
                                          o_m, p_m, i_b, i_h, Tq, Tk, D, DV, R, window, qk_scale, log_eps, seed,
                                          drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                                          USE_TMA, False, MOD, S, True, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                                          DROPOUT, PRECISION, BLOCK_N, HEAD_DIM, HEAD_DIM_V)
        for n0 in range(a, b, BLOCK_N):  # admitted whole: no mask but the bounds and the key mask
            acc, l_i, m_i = _fwd_step(acc, l_i, m_i, n0, b_q, K_BH, V_BH, K_DESC, V_DESC, stride_kn, stride_vn, o_m,
                                      p_m, i_b, i_h, Tq, Tk, D, DV, R, window, qk_scale, log_eps, seed, drop_thr,
                                      drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, USE_TMA, False, MOD,
                                      S, False, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, PRECISION, BLOCK_N,
                                      HEAD_DIM, HEAD_DIM_V)
        if CAUSAL:
            for n0 in range(b, hi, BLOCK_N):  # on the diagonal: causal mask
                acc, l_i, m_i = _fwd_step(acc, l_i, m_i, n0, b_q, K_BH, V_BH, K_DESC, V_DESC, stride_kn, stride_vn,
                                          o_m, p_m, i_b, i_h, Tq, Tk, D, DV, R, window, qk_scale, log_eps, seed,
                                          drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                                          USE_TMA, True, MOD, S, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS,
                                          DROPOUT, PRECISION, BLOCK_N, HEAD_DIM, HEAD_DIM_V)

        # l_i == 0 exactly iff the row has no admissible key (or only keys at -inf, e.g. key_bias = -inf):
        # out = 0 (acc is 0 there, unless a non-finite v of an admissible key made it NaN) and lse = -inf.
        # A NaN score makes l_i NaN, which is not == 0: out and lse are NaN. A +inf score (m_i = FLT_MAX)
        # gives out = NaN (softmax's inf - inf) and lse = +inf (NaN if the row also has a NaN score), so
        # the backward's P = exp(s - lse) is 0 for the row's finite scores, as for any other row.
        empty = l_i == 0.0
        inf_row = m_i == FLT_MAX
        out = tl.where(inf_row[:, None], float("nan"), acc / tl.where(empty, 1.0, l_i)[:, None])
        _store_tile(OUT_BH, out, o_m, o_dv, stride_om, Tq, DV)
        lse = tl.where(inf_row, tl.where(l_i == l_i, float("inf"), float("nan")), (m_i + tl.log2(l_i)) * LN2)
        lse = tl.where(empty, float("-inf"), lse)
        tl.store(LSE_BH + o_m, lse, mask=o_m < Tq)
        _store_flags(REDO_BH, _non_finite_rows(acc), o_m, Tq)


# ---------------------------------------------------------------------------------------------
# Backward: P and dS recomputed from the saved lse
# ---------------------------------------------------------------------------------------------

@triton.jit
def _probabilities(s, ok, b_shift, b_inv_sum, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr, drop_scale,
                   DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """(P after dropout, dS) of a tile from its base-2 scores and the rows' normalisation
    (``_row_norm``); both 0 where not ``ok``. A NaN row (NaN lse or delta) or a non-finite dO / v gives
    NaN P / dS on the admissible entries only (dP's column j depends on v_j alone).
    """
    b_p = tl.where(ok, tl.math.exp2(s - b_shift[:, None]) * b_inv_sum[:, None], 0.0)
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
    b_pd = b_p
    if DROPOUT:
        keep = dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n)
        b_pd = tl.where(keep, b_p * drop_scale, 0.0)
        b_dp = tl.where(keep, b_dp * drop_scale, 0.0)
    return b_pd, tl.where(ok, b_p * (b_dp - b_delta[:, None]), 0.0)


@triton.jit
def _row_norm(NORM_BH, o_m, Tq):
    """The rows' (shift, 1 / sum) in base 2, written by ``attention_row_norm_kernel``: P = exp2(s - shift) / sum."""
    b_shift = tl.load(NORM_BH + 2 * o_m, mask=o_m < Tq, other=0.0)
    b_inv_sum = tl.load(NORM_BH + 2 * o_m + 1, mask=o_m < Tq, other=1.0)
    return b_shift, b_inv_sum


# float32 cannot hold row_max + log(row_sum) of a row whose |lse| is this large to about 2^-14 (its
# ulp is 2^-13 at 1024, 64 at 1e9): every key at an additive -1e4 / -1e9, or a huge scale. P recomputed as
# exp(s - lse) from such an lse would be off by the rounding of lse, a factor up to the number of tied
# keys; those rows get their max and sum again (csrc/common/score_math.h has the same rule).
COARSE_LSE: tl.constexpr = tl.constexpr(1024.0)


@triton.jit(do_not_specialize=["H", "Tq", "Tk", "R", "window"])
def attention_row_norm_kernel(
    Q, K, LSE, NORM, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    H, Tq, Tk, D, R, window, scale, log_eps,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """NORM (B, H, Tq, 2): each query row's base-2 (shift, 1 / sum), with which the backward recomputes
    P = exp2(s - shift) / sum. An ordinary row takes (lse * log2(e), 1), an empty one (0, 1); a row whose
    finite |lse| is at least COARSE_LSE takes the max and sum of its scores again, from a pass over its
    keys. A tile without such a row reads lse only: no host sync, and ordinary inputs pay one cheap launch.
    """
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    b_lse = tl.load(LSE + i_bh64 * Tq + o_m, mask=o_m < Tq, other=0.0)
    shift = tl.where(b_lse == float("-inf"), 0.0, b_lse * LOG2E)
    inv_sum = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
    coarse = (tl.abs(b_lse) >= COARSE_LSE) & (tl.abs(b_lse) < float("inf"))  # NaN: False
    if tl.max(coarse.to(tl.int32), 0) > 0:
        p_m = o_m + (Tk - Tq)
        b_q = _tile(Q + i_b64 * stride_qb + i_h64 * stride_qh, o_m, tl.arange(0, HEAD_DIM), stride_qm, Tq, D)
        K_BH = K + i_b64 * stride_kb + i_h64 * stride_kh
        VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        lo, _, _, hi = _key_ranges(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
        for n0 in range(lo, hi, BLOCK_N):  # every mask on every tile: a rare path, kept small
            o_n = n0 + tl.arange(0, BLOCK_N)
            b_k = _tile(K_BH, o_n, tl.arange(0, HEAD_DIM), stride_kn, Tk, D)
            s = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, scale * LOG2E, VALID_ROW, KB_ROW, PARAM_0, PARAM_1,
                        TIMES_ROW, R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES,
                        HAS_EPS, PRECISION)[0]
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.math.exp2(m_i - m_use) + tl.sum(tl.math.exp2(s - m_use[:, None]), 1)
            m_i = m_new
        shift = tl.where(coarse, m_i, shift)
        inv_sum = tl.where(coarse, 1.0 / l_i, inv_sum)
    NORM_BH = NORM + i_bh64 * Tq * 2
    tl.store(NORM_BH + 2 * o_m, shift, mask=o_m < Tq)
    tl.store(NORM_BH + 2 * o_m + 1, inv_sum, mask=o_m < Tq)


@triton.jit
def _dkdv_step(dk, dv, dkb, m0, b_k, b_v, Q_BH, DO_BH, Q_DESC, DO_DESC, NORM_BH, DELTA_BH, stride_qm, stride_dom, o_n,
               i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW,
               KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, USE_TMA: tl.constexpr, MOD: tl.constexpr, S: tl.constexpr,
               CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
               HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
               BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """(dk, dv, d key_bias) of the key tile with query tile m0 added (plain dots)."""
    o_m = m0 + tl.arange(0, BLOCK_M)
    p_m = o_m + (Tk - Tq)
    b_q = _rows(Q_BH, Q_DESC, i_b, i_h, m0, stride_qm, Tq, D, BLOCK_M, HEAD_DIM, USE_TMA)
    b_do = _rows(DO_BH, DO_DESC, i_b, i_h, m0, stride_dom, Tq, DV_DIM, BLOCK_M, HEAD_DIM_V, USE_TMA)
    b_shift, b_inv_sum = _row_norm(NORM_BH, o_m, Tq)
    b_delta = tl.load(DELTA_BH + o_m, mask=o_m < Tq, other=0.0)
    s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, qk_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                    R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, PRECISION)
    b_pd, b_ds = _probabilities(s, ok, b_shift, b_inv_sum, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr,
                                drop_scale, DROPOUT, PRECISION)
    dv = tl.dot(tl.trans(b_pd).to(b_do.dtype), b_do, dv, input_precision=PRECISION)
    dk = tl.dot(tl.trans(b_ds).to(b_q.dtype), b_q, dk, input_precision=PRECISION)
    if HAS_BIAS:
        dkb += tl.sum(b_ds, 0)
    return dk, dv, dkb


@triton.jit(do_not_specialize=["H", "Tq", "Tk", "R", "window", "seed", "drop_thr"])
def attention_bwd_dkdv_kernel(
    Q, K, V, DO, NORM, DELTA, DK, DV, DKB, REDO, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES, Q_DESC, DO_DESC,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    H, Tq, Tk, D, DV_DIM, R, window, scale, log_eps, seed: tl.int64, drop_thr: tl.int64, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr, REDO_PASS: tl.constexpr, USE_TMA: tl.constexpr,
):
    """dK, dV (contiguous (B, H, Tk, .)) and d key_bias (B, H, Tk) for one key tile. Q_DESC / DO_DESC: q's
    and dO's tensor descriptors (block [1, 1, BLOCK_M, HEAD_DIM(_V)]) where ``USE_TMA``, else unused.

    Plain dots in the loop, which flags in REDO ((B * H, Tk) int8) the keys whose dK or dV ended
    non-finite; the launch after it (``REDO_PASS``) computes them again with non-finite q / dO kept to
    the keys that admit them (d key_bias only sums dS, which is exact either way).
    """
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    Q_BH, DO_BH = Q + i_b64 * stride_qb + i_h64 * stride_qh, DO + i_b64 * stride_dob + i_h64 * stride_doh
    NORM_BH, DELTA_BH = NORM + i_bh64 * Tq * 2, DELTA + i_bh64 * Tq
    DK_BH, DV_BH, REDO_BH = DK + i_bh64 * Tk * D, DV + i_bh64 * Tk * DV_DIM, REDO + i_bh64 * Tk
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk
    qk_scale = scale * LOG2E
    lo, b, c, hi = _query_ranges(i_n, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    if REDO_PASS:
        if _any_flagged(REDO_BH, o_n, Tk):
            _dkdv_exact(i_n * BLOCK_N, lo, hi, REDO_BH, K_BH, V_BH, Q_BH, DO_BH, NORM_BH, DELTA_BH, DK_BH, DV_BH,
                        stride_qm, stride_kn, stride_vn, stride_dom, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, scale,
                        qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1,
                        TIMES_ROW, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT,
                        BLOCK_M, BLOCK_N, HEAD_DIM, HEAD_DIM_V)
    else:
        o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
        b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D)
        b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV_DIM)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM_V], dtype=tl.float32)
        dkb = tl.zeros([BLOCK_N], dtype=tl.float32)
        if CAUSAL:
            for m0 in range(lo, b, BLOCK_M):  # on the diagonal: causal mask
                dk, dv, dkb = _dkdv_step(dk, dv, dkb, m0, b_k, b_v, Q_BH, DO_BH, Q_DESC, DO_DESC, NORM_BH, DELTA_BH,
                                         stride_qm, stride_dom, o_n, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale,
                                         log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1,
                                         TIMES_ROW, USE_TMA, MOD, S, True, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES,
                                         HAS_EPS, DROPOUT, PRECISION, BLOCK_M, HEAD_DIM, HEAD_DIM_V)
        for m0 in range(b, c, BLOCK_M):  # admitted whole: no mask but the bounds and the key mask
            dk, dv, dkb = _dkdv_step(dk, dv, dkb, m0, b_k, b_v, Q_BH, DO_BH, Q_DESC, DO_DESC, NORM_BH, DELTA_BH,
                                     stride_qm, stride_dom, o_n, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale,
                                     log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1,
                                     TIMES_ROW, USE_TMA, MOD, S, False, False, HAS_VALID, HAS_BIAS, HAS_TIMES,
                                     HAS_EPS, DROPOUT, PRECISION, BLOCK_M, HEAD_DIM, HEAD_DIM_V)
        if WINDOWED:
            for m0 in range(c, hi, BLOCK_M):  # across the window's edge: window mask
                dk, dv, dkb = _dkdv_step(dk, dv, dkb, m0, b_k, b_v, Q_BH, DO_BH, Q_DESC, DO_DESC, NORM_BH, DELTA_BH,
                                         stride_qm, stride_dom, o_n, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale,
                                         log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1,
                                         TIMES_ROW, USE_TMA, MOD, S, False, True, HAS_VALID, HAS_BIAS, HAS_TIMES,
                                         HAS_EPS, DROPOUT, PRECISION, BLOCK_M, HEAD_DIM, HEAD_DIM_V)
        _store_tile(DK_BH, dk * scale, o_n, o_d, D, Tk, D)
        _store_tile(DV_BH, dv, o_n, o_dv, DV_DIM, Tk, DV_DIM)
        if HAS_BIAS:
            tl.store(DKB + i_bh64 * Tk + o_n, dkb, mask=o_n < Tk)
        _store_flags(REDO_BH, tl.maximum(_non_finite_rows(dk), _non_finite_rows(dv)), o_n, Tk)


@triton.jit
def _dkdv_exact(n0, lo, hi, REDO_BH, K_BH, V_BH, Q_BH, DO_BH, NORM_BH, DELTA_BH, DK_BH, DV_BH, stride_qm, stride_kn,
                stride_vn, stride_dom, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, scale, qk_scale, log_eps, seed,
                drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, MOD: tl.constexpr,
                S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """dK, dV of the flagged keys of key tile n0 again, one key at a time: dv_j = sum over the admissible i
    of P_ij dO_i and dk_j = scale * sum of dS_ij q_i, with IEEE products (see ``_fwd_exact``)."""
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    for j in range(n0, tl.minimum(n0 + BLOCK_N, Tk)):
        if tl.load(REDO_BH + j) != 0:
            o_n = j + tl.arange(0, 1)
            b_k = tl.reshape(_tile(K_BH, o_n, o_d, stride_kn, Tk, D), [HEAD_DIM]).to(tl.float32)
            b_v = tl.reshape(_tile(V_BH, o_n, o_dv, stride_vn, Tk, DV_DIM), [HEAD_DIM_V]).to(tl.float32)
            dk = tl.zeros([HEAD_DIM], dtype=tl.float32)
            dv = tl.zeros([HEAD_DIM_V], dtype=tl.float32)
            for m0 in range(lo, hi, BLOCK_M):
                o_m = m0 + tl.arange(0, BLOCK_M)
                p_m = o_m + (Tk - Tq)
                b_q = _tile(Q_BH, o_m, o_d, stride_qm, Tq, D).to(tl.float32)
                b_do = _tile(DO_BH, o_m, o_dv, stride_dom, Tq, DV_DIM).to(tl.float32)
                b_shift, b_inv_sum = _row_norm(NORM_BH, o_m, Tq)
                b_delta = tl.load(DELTA_BH + o_m, mask=o_m < Tq, other=0.0)
                s = tl.sum(b_q * b_k[None, :], 1)[:, None] * qk_scale
                s, ok = _modify(s, o_m, p_m, o_n, i_h, Tq, Tk, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R,
                                log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS)
                b_p = tl.where(ok, tl.math.exp2(s - b_shift[:, None]) * b_inv_sum[:, None], 0.0)
                b_dp = tl.sum(b_do * b_v[None, :], 1)[:, None]
                b_pd = b_p
                if DROPOUT:
                    keep = dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n)
                    b_pd = tl.where(keep, b_p * drop_scale, 0.0)
                    b_dp = tl.where(keep, b_dp * drop_scale, 0.0)
                b_ds = tl.where(ok, b_p * (b_dp - b_delta[:, None]), 0.0)
                dv += tl.sum(tl.where(ok, b_pd * b_do, 0.0), 0)
                dk += tl.sum(tl.where(ok, b_ds * b_q, 0.0), 0)
            _store_tile(DK_BH, (dk * scale)[None, :], o_n, o_d, D, Tk, D)
            _store_tile(DV_BH, dv[None, :], o_n, o_dv, DV_DIM, Tk, DV_DIM)


@triton.jit
def _dq_step(dq, g0, g1, n0, b_q, b_do, b_shift, b_inv_sum, b_delta, K_BH, V_BH, K_DESC, V_DESC, stride_kn, stride_vn,
             o_m, p_m, p0, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale, log_eps, seed, drop_thr, drop_scale,
             VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, PARTIAL_0_TILE, PARTIAL_1_TILE, USE_TMA: tl.constexpr,
             MOD: tl.constexpr, S: tl.constexpr, S_PAD: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
             HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr,
             DROPOUT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """(dq, g0, g1) of the query tile with key tile n0 added: dQ by a plain dot, the modifier's gradient
    accumulators by ``grad_tile``. p0: the query tile's first row position."""
    o_n = n0 + tl.arange(0, BLOCK_N)
    b_k = _rows(K_BH, K_DESC, i_b, i_h, n0, stride_kn, Tk, D, BLOCK_N, HEAD_DIM, USE_TMA)
    b_v = _rows(V_BH, V_DESC, i_b, i_h, n0, stride_vn, Tk, DV_DIM, BLOCK_N, HEAD_DIM_V, USE_TMA)
    s, ok = _scores(b_q, b_k, o_m, p_m, o_n, i_h, Tq, Tk, qk_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                    R, log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, PRECISION)
    _, b_ds = _probabilities(s, ok, b_shift, b_inv_sum, b_do, b_v, b_delta, o_m, o_n, i_b, i_h, seed, drop_thr,
                             drop_scale, DROPOUT, PRECISION)
    dq = tl.dot(b_ds.to(b_k.dtype), b_k, dq, input_precision=PRECISION)
    g0, g1 = grad_tile(g0, g1, PARTIAL_0_TILE, PARTIAL_1_TILE, PARAM_0, PARAM_1, b_ds, i_h, p_m, o_n, p0 - n0, Tk,
                       TIMES_ROW, R, log_eps, MOD, S, S_PAD, HAS_TIMES, HAS_EPS, BLOCK_M, BLOCK_N)
    return dq, g0, g1


@triton.jit(do_not_specialize=["H", "Tq", "Tk", "R", "window", "seed", "drop_thr"])
def attention_bwd_dq_kernel(
    Q, K, V, DO, NORM, DELTA, DQ, PARTIAL_0, PARTIAL_1, REDO, VALID, KEY_BIAS, PARAM_0, PARAM_1, TIMES, K_DESC, V_DESC,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    H, Tq, Tk, D, DV_DIM, R, window, scale, log_eps, seed: tl.int64, drop_thr: tl.int64, drop_scale,
    MOD: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr, S_PAD: tl.constexpr, REDO_PASS: tl.constexpr, USE_TMA: tl.constexpr,
):
    """dQ (contiguous) for one query tile, plus the modifier's per-tile gradient partials (score_mods.py).
    K_DESC / V_DESC: as the forward's.

    Plain dots in the loop, which flags in REDO ((B * H, Tq) int8) the rows whose dQ ended non-finite;
    the launch after it (``REDO_PASS``) computes them again with non-finite k kept to the rows that
    admit them (the partials only sum dS, which is exact either way).
    """
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    Q_BH, DO_BH = Q + i_b64 * stride_qb + i_h64 * stride_qh, DO + i_b64 * stride_dob + i_h64 * stride_doh
    K_BH, V_BH = K + i_b64 * stride_kb + i_h64 * stride_kh, V + i_b64 * stride_vb + i_h64 * stride_vh
    NORM_BH, DELTA_BH = NORM + i_bh64 * Tq * 2, DELTA + i_bh64 * Tq
    DQ_BH, REDO_BH = DQ + i_bh64 * Tq * D, REDO + i_bh64 * Tq
    VALID_ROW, TIMES_ROW, KB_ROW = VALID + i_b64 * Tk, TIMES + i_b64 * Tk, KEY_BIAS + i_bh64 * Tk
    qk_scale = scale * LOG2E
    lo, a, b, hi = _key_ranges(i_m, Tq, Tk, window, BLOCK_M, BLOCK_N, CAUSAL, WINDOWED)
    if REDO_PASS:
        if _any_flagged(REDO_BH, o_m, Tq):
            _dq_exact(i_m * BLOCK_M, lo, hi, REDO_BH, Q_BH, DO_BH, K_BH, V_BH, NORM_BH, DELTA_BH, DQ_BH, stride_qm,
                      stride_kn, stride_vn, stride_dom, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, scale, qk_scale,
                      log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, MOD, S,
                      CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, BLOCK_M, BLOCK_N,
                      HEAD_DIM, HEAD_DIM_V)
    else:
        p_m = o_m + (Tk - Tq)
        o_d = tl.arange(0, HEAD_DIM)
        b_q = _tile(Q_BH, o_m, o_d, stride_qm, Tq, D)
        b_do = _tile(DO_BH, o_m, tl.arange(0, HEAD_DIM_V), stride_dom, Tq, DV_DIM)
        b_shift, b_inv_sum = _row_norm(NORM_BH, o_m, Tq)
        b_delta = tl.load(DELTA_BH + o_m, mask=o_m < Tq, other=0.0)
        p0 = i_m * BLOCK_M + (Tk - Tq)  # the tile's first row position

        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        PARTIAL_0_TILE = partial_tile(PARTIAL_0, i_bh64, i_m, Tq, R, MOD, S, BLOCK_M)
        PARTIAL_1_TILE = partial_tile(PARTIAL_1, i_bh64, i_m, Tq, R, MOD, S, BLOCK_M)
        g0, g1 = grad_init(BLOCK_M, BLOCK_N, MOD, S_PAD)
        if WINDOWED:
            for n0 in range(lo, a, BLOCK_N):  # across the window's edge: window mask
                dq, g0, g1 = _dq_step(dq, g0, g1, n0, b_q, b_do, b_shift, b_inv_sum, b_delta, K_BH, V_BH, K_DESC,
                                      V_DESC, stride_kn, stride_vn, o_m, p_m, p0, i_b, i_h, Tq, Tk, D, DV_DIM, R,
                                      window, qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0,
                                      PARAM_1, TIMES_ROW, PARTIAL_0_TILE, PARTIAL_1_TILE, USE_TMA, MOD, S, S_PAD,
                                      False, True, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, PRECISION,
                                      BLOCK_M, BLOCK_N, HEAD_DIM, HEAD_DIM_V)
        for n0 in range(a, b, BLOCK_N):  # admitted whole: no mask but the bounds and the key mask
            dq, g0, g1 = _dq_step(dq, g0, g1, n0, b_q, b_do, b_shift, b_inv_sum, b_delta, K_BH, V_BH, K_DESC, V_DESC,
                                  stride_kn, stride_vn, o_m, p_m, p0, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, qk_scale,
                                  log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW,
                                  PARTIAL_0_TILE, PARTIAL_1_TILE, USE_TMA, MOD, S, S_PAD, False, False, HAS_VALID,
                                  HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, PRECISION, BLOCK_M, BLOCK_N, HEAD_DIM,
                                  HEAD_DIM_V)
        if CAUSAL:
            for n0 in range(b, hi, BLOCK_N):  # on the diagonal: causal mask
                dq, g0, g1 = _dq_step(dq, g0, g1, n0, b_q, b_do, b_shift, b_inv_sum, b_delta, K_BH, V_BH, K_DESC,
                                      V_DESC, stride_kn, stride_vn, o_m, p_m, p0, i_b, i_h, Tq, Tk, D, DV_DIM, R,
                                      window, qk_scale, log_eps, seed, drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0,
                                      PARAM_1, TIMES_ROW, PARTIAL_0_TILE, PARTIAL_1_TILE, USE_TMA, MOD, S, S_PAD, True,
                                      WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS, DROPOUT, PRECISION, BLOCK_M,
                                      BLOCK_N, HEAD_DIM, HEAD_DIM_V)
        _store_tile(DQ_BH, dq * scale, o_m, o_d, D, Tq, D)
        _store_flags(REDO_BH, _non_finite_rows(dq), o_m, Tq)
        n_last = lo + tl.maximum(hi - 1 - lo, 0) // BLOCK_N * BLOCK_N  # the last key tile visited (lo if none)
        grad_finish(g0, g1, PARTIAL_0_TILE, PARTIAL_1_TILE, o_m, p0 - n_last, Tq, R, MOD, S, S_PAD, BLOCK_N)


@triton.jit
def _dq_exact(m0, lo, hi, REDO_BH, Q_BH, DO_BH, K_BH, V_BH, NORM_BH, DELTA_BH, DQ_BH, stride_qm, stride_kn,
              stride_vn, stride_dom, i_b, i_h, Tq, Tk, D, DV_DIM, R, window, scale, qk_scale, log_eps, seed,
              drop_thr, drop_scale, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, MOD: tl.constexpr,
              S: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, HAS_VALID: tl.constexpr,
              HAS_BIAS: tl.constexpr, HAS_TIMES: tl.constexpr, HAS_EPS: tl.constexpr, DROPOUT: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr):
    """dQ of the flagged rows of query tile m0 again, one row at a time: dq_i = scale * sum over the
    admissible j of dS_ij k_j, with IEEE products (see ``_fwd_exact``)."""
    o_d, o_dv = tl.arange(0, HEAD_DIM), tl.arange(0, HEAD_DIM_V)
    for i in range(m0, tl.minimum(m0 + BLOCK_M, Tq)):
        if tl.load(REDO_BH + i) != 0:
            o_m = i + tl.arange(0, 1)
            p_m = o_m + (Tk - Tq)
            b_q = tl.reshape(_tile(Q_BH, o_m, o_d, stride_qm, Tq, D), [HEAD_DIM]).to(tl.float32)
            b_do = tl.reshape(_tile(DO_BH, o_m, o_dv, stride_dom, Tq, DV_DIM), [HEAD_DIM_V]).to(tl.float32)
            b_shift, b_inv_sum = _row_norm(NORM_BH, o_m, Tq)
            b_delta = tl.load(DELTA_BH + o_m)
            dq = tl.zeros([HEAD_DIM], dtype=tl.float32)
            for n0 in range(lo, hi, BLOCK_N):
                o_n = n0 + tl.arange(0, BLOCK_N)
                b_k = _tile(K_BH, o_n, o_d, stride_kn, Tk, D).to(tl.float32)
                b_v = _tile(V_BH, o_n, o_dv, stride_vn, Tk, DV_DIM).to(tl.float32)
                s = tl.sum(b_k * b_q[None, :], 1)[None, :] * qk_scale
                s, ok = _modify(s, o_m, p_m, o_n, i_h, Tq, Tk, VALID_ROW, KB_ROW, PARAM_0, PARAM_1, TIMES_ROW, R,
                                log_eps, window, MOD, S, CAUSAL, WINDOWED, HAS_VALID, HAS_BIAS, HAS_TIMES, HAS_EPS)
                b_p = tl.where(ok, tl.math.exp2(s - b_shift[:, None]) * b_inv_sum[:, None], 0.0)
                b_dp = tl.sum(b_v * b_do[None, :], 1)[None, :]
                if DROPOUT:
                    b_dp = tl.where(dropout_keep(seed, drop_thr, i_b, i_h, o_m, o_n), b_dp * drop_scale, 0.0)
                b_ds = tl.where(ok, b_p * (b_dp - b_delta[:, None]), 0.0)
                dq += tl.sum(tl.where(tl.trans(ok), tl.trans(b_ds) * b_k, 0.0), 0)
            _store_tile(DQ_BH, (dq * scale)[None, :], o_m, o_d, D, Tq, D)
