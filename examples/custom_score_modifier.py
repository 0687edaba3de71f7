"""A custom score modifier, walked through: write it densely, map it onto a fused operator, check it.

Every tempattn operator computes ``s_ij = scale * q_i·k_j + key_bias_j + m_ij`` over the
admissible keys, and differs only in the *score modifier* ``m_ij``:

- ``masked_sdpa``: ``m = 0`` (plus ``key_bias``, any per-key term);
- ``relpos_attention``: ``m = rel_bias[h, min(Δ, R - 1)]``, a learned table over the distance
  ``Δ = i - j`` (a window optional);
- ``decay_attention``: ``m = log(Σ_s a_hs γ_hs^Δ + eps)``, a learned mixture of decays.

Many modifiers from the literature are one of these in disguise. The recipe:

1. write the modifier as a plain function of ``(b, h, i, j)`` and a dense reference attention
   (exactly what ``flex_attention``'s ``score_mod`` would be);
2. express it with an operator's parameters (often a differentiable re-parametrisation);
3. check outputs *and gradients* against the dense reference on small shapes;
4. train with the fused operator: O(T) memory, or O(T·W) work with a window.

Three modifiers below: learnable ALiBi slopes, T5's bucketed relative bias, a per-key event-type
bias combined with a distance table. The end of the file says what to do when a modifier is none
of these.

Run: ``python examples/custom_score_modifier.py`` (a few seconds on a CPU).
"""
import math

import torch

import tempattn

torch.manual_seed(0)
B, H, T, D = 2, 4, 48, 16


# ---- 1. A dense reference for any modifier -----------------------------------------------------

def dense_attention(q, k, v, score_mod, causal=True, key_padding_mask=None):
    """Softmax attention with ``score_mod(b, h, i, j)`` added to the scores, O(T²) memory.

    ``b, h, i, j`` are broadcastable index tensors ``(B,1,1,1)``, ``(1,H,1,1)``, ``(1,1,Tq,1)``,
    ``(1,1,1,Tk)``, as in a vectorised ``flex_attention`` score_mod. Queries are bottom-right
    aligned like tempattn's (``i`` sits at position ``i + Tk - Tq``).
    """
    Bq, Hq, Tq, Dq = q.shape
    Tk = k.shape[2]
    b, h = torch.arange(Bq).view(-1, 1, 1, 1), torch.arange(Hq).view(1, -1, 1, 1)
    i, j = (torch.arange(Tq) + Tk - Tq).view(1, 1, -1, 1), torch.arange(Tk).view(1, 1, 1, -1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dq) + score_mod(b, h, i, j)
    admissible = (j <= i) if causal else torch.ones_like(j <= i)
    if key_padding_mask is not None:
        admissible = admissible & ~key_padding_mask.view(Bq, 1, 1, Tk)
    return torch.softmax(scores.masked_fill(~admissible, -math.inf), dim=-1) @ v


def check(name, fused_fn, dense_fn, params):
    """Compare outputs and the gradients of q, k, v and ``params`` between the fused and dense versions."""
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    leaves = [q, k, v, *params]
    out_fused, out_dense = fused_fn(q, k, v), dense_fn(q, k, v)
    torch.testing.assert_close(out_fused, out_dense)
    probe = torch.randn_like(out_dense)
    grads_fused = torch.autograd.grad((out_fused * probe).sum(), leaves)
    grads_dense = torch.autograd.grad((out_dense * probe).sum(), leaves)
    for g_f, g_d in zip(grads_fused, grads_dense):
        torch.testing.assert_close(g_f, g_d)
    print(f"{name}: outputs and gradients match the dense reference")


# ---- 2a. Learnable ALiBi: m = -slope_h * (i - j) ------------------------------------------------
# decay_attention with one scale (S = 1), eps = 0: m = log(1 * exp(log_gamma * Δ)) = log_gamma * Δ.
# So log_gamma = -slope; a softplus keeps the slope positive (log_gamma <= 0 is required).

slope_raw = torch.randn(H, 1, dtype=torch.float64, requires_grad=True)


def alibi_fused(q, k, v):
    log_gamma = -torch.nn.functional.softplus(slope_raw)                     # (H, 1) <= 0
    return tempattn.decay_attention(q, k, v, log_gamma, torch.zeros_like(log_gamma), eps=0.0)


def alibi_dense(q, k, v):
    slope = torch.nn.functional.softplus(slope_raw)[:, 0]
    return dense_attention(q, k, v, lambda b, h, i, j: -slope[h] * (i - j).clamp(min=0))


check("learnable ALiBi via decay_attention(S=1, eps=0)", alibi_fused, alibi_dense, [slope_raw])


# ---- 2b. T5's bucketed relative-position bias (causal) ------------------------------------------
# Exact buckets for small distances, log-spaced ones up to max_distance, one bucket beyond.
# relpos_attention(window=None) looks up rel_bias[h, min(Δ, R - 1)]: expand the bucket table to
# one entry per distance 0..max_distance; distances past the end share the last entry, as in T5.
# The expansion is an index, so gradients flow back into the (H, num_buckets) table.

NUM_BUCKETS, MAX_DISTANCE = 8, 32


def t5_bucket(distance):
    exact = NUM_BUCKETS // 2
    log_ratio = torch.log(distance.clamp(min=exact).double() / exact) / math.log(MAX_DISTANCE / exact)
    large = (exact + (log_ratio * (NUM_BUCKETS - exact)).long()).clamp(max=NUM_BUCKETS - 1)
    return torch.where(distance < exact, distance, large)


bucket_table = torch.randn(H, NUM_BUCKETS, dtype=torch.float64, requires_grad=True)


def t5_fused(q, k, v):
    rel_bias = bucket_table[:, t5_bucket(torch.arange(MAX_DISTANCE + 1))]   # (H, MAX_DISTANCE + 1)
    return tempattn.relpos_attention(q, k, v, rel_bias, window=None)


def t5_dense(q, k, v):
    return dense_attention(q, k, v, lambda b, h, i, j: bucket_table[h, t5_bucket((i - j).clamp(min=0))])


check("T5 bucketed bias via relpos_attention(window=None)", t5_fused, t5_dense, [bucket_table])


# ---- 2c. A per-key term plus a distance term, with padding --------------------------------------
# Anything that depends on the key alone (an event type, a confidence, a soft mask) is key_bias,
# (B, Tk) or (B, H, Tk), differentiable; it adds to the operator's own modifier, here a windowed
# distance table (O(T * W) work).

W = 6
event_type = torch.randint(0, 3, (B, T))
type_bias = torch.randn(3, H, dtype=torch.float64, requires_grad=True)    # learned, per type and head
rel_bias = torch.randn(H, W + 1, dtype=torch.float64, requires_grad=True)
padding = torch.zeros(B, T, dtype=torch.bool)
padding[1, -5:] = True


def combined_fused(q, k, v):
    key_bias = type_bias[event_type].permute(0, 2, 1)                      # (B, H, Tk)
    return tempattn.relpos_attention(q, k, v, rel_bias, window=W, key_bias=key_bias, key_padding_mask=padding)


def combined_dense(q, k, v):
    def score_mod(b, h, i, j):
        in_window = (i - j) <= W
        table = rel_bias[h, (i - j).clamp(0, W)].masked_fill(~in_window, -math.inf)
        return type_bias[event_type[b, j], h] + table
    return dense_attention(q, k, v, score_mod, key_padding_mask=padding)


check("key_bias + windowed relpos_attention", combined_fused, combined_dense, [type_bias, rel_bias])


# ---- 3. When a modifier is none of these --------------------------------------------------------
# - Two distance terms (a table *and* a decay) do not fit one call; pick one, or fold the decay
#   into the table when the window is short (rel_bias[h, d] = table[h, d] + log(decay(d))).
# - A term that depends on the query content, or on (i, j) in a way that is not a function of
#   i - j (document boundaries, arbitrary 2-D masks), needs the dense path: SDPA with an attn_mask
#   or a bias, or flex_attention. tempattn's masks are per key by design.
# - To add a new fused modifier to tempattn itself: the operator's maths and dense reference go in
#   tempattn/ops/<op>/ (__init__.py, reference.py), its declaration in op.py, and the modifier
#   in the tiled cores, csrc/cpu/common/score_mods.h (C++) and kernels/common/score_mods.py
#   (Triton); the contract suite in tests/ops/ then checks every backend against the reference.
print("ok")
