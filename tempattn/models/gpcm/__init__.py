"""Knowledge tracing with generalised-partial-credit-model (GPCM) heads (docs/models.md).

Input: per student, the items answered in test order ``items (B, T)`` and the response
categories ``responses (B, T)`` in ``0..K-1``, right-padded, ``padding_mask (B, T)`` True = padding.
Output: ``log_probs (B, T, K)``, the predicted distribution of each step's response.

Architecture (:class:`GPCMKnowledgeTracer`, width ``E``):

1. Tokens. ``x_t = E_item[q_t] + E_interaction[(q_{t-1}, r_{t-1})]``: the item of step ``t`` and
   the *previous* interaction; step 0 gets a start token. The response stream is shifted by one.
2. Mixing. ``h = LayerNorm(x + Attention(x))`` then :class:`~tempattn.nn.TemporalContext` (a causal
   depthwise convolution). ``gpcm``: :class:`~tempattn.nn.RelativeTemporalAttention`, causal,
   ``window=5`` (each step sees itself and the 5 before), with a learned per-head key bias of the
   key step's previous response (``n_categories = K + 1``: category ``K`` = none).
   ``attention_gpcm`` (baseline): :class:`~tempattn.nn.MultiheadAttention` with ``is_causal=True``,
   everything else equal.
3. DKVMN memory. Static keys ``M_k (N, E)``, ``w_t = softmax(h_t M_kᵀ)``; the read
   ``Σ_i w_t(i) M_v(i)`` uses the value memory *before* step ``t`` writes; the write uses
   ``u_t = [h_t, E_interaction[(q_t, r_t)]]``: erase ``e = sigmoid(W_e u_t)``, add ``a = tanh(W_a u_t)``,
   ``M_v ← M_v ∘ (1 − w eᵀ) + w aᵀ``.
4. IRT heads. Ability ``θ_t = w · tanh(W_f [read_t, h_t]) + b``; per item ``j`` a discrimination
   ``α_j = softplus(a_j) > 0`` and ordered thresholds ``β_{j,1} < … < β_{j,K-1}`` (first plus
   cumulative softplus increments); ``P(X_t = k) ∝ exp Σ_{v≤k} α_{q_t}(θ_t − β_{q_t,v})`` (``k = 0``: 0).
   Optional ``item_categories`` caps an item's categories (the national maths items score 0–1 … 0–4).

Leak-freedom: the prediction for step ``t`` depends on ``q_0..q_t`` and ``r_0..r_{t-1}`` only.
The tokens carry responses up to ``t-1`` (the shift), the attention and the convolution are
causal, and the memory is read before step ``t``'s write, the only place ``r_t`` enters. Padded
steps are masked out of the attention keys, zeroed before the convolution and never written
to memory. Missing responses (NaN) are not accepted by the model (a ``TypeError`` on float
``responses`` says so); :func:`data.sequences_from_matrix` drops them from the sequence, so they are
neither input nor target.

Metrics (:mod:`.train`): NLL, accuracy, quadratic weighted kappa over the non-padded steps.
"""
from .model import GPCMKnowledgeTracer, GPCMPrediction

__all__ = ["build_gpcm", "build_attention_gpcm", "GPCMKnowledgeTracer", "GPCMPrediction"]


def build_gpcm(n_items: int = 50, n_categories: int = 4, *, window: int = 5, **kw) -> GPCMKnowledgeTracer:
    """The model: relative temporal attention (``window`` steps back, response-aware key bias).

    Keywords as :class:`GPCMKnowledgeTracer` (embed_dim, num_heads, memory_size, memory_dim,
    summary_dim, context_kernel, dropout, item_categories, backend).
    """
    return GPCMKnowledgeTracer(n_items, n_categories, attention="relative", window=window, **kw)


def build_attention_gpcm(n_items: int = 50, n_categories: int = 4, **kw) -> GPCMKnowledgeTracer:
    """The baseline: plain causal multi-head attention, everything else as :func:`build_gpcm`."""
    return GPCMKnowledgeTracer(n_items, n_categories, attention="causal", window=None, **kw)
