"""``tsa``: a fraud classifier on event sequences, and ``tsa_gated``, its two-sequence variant (docs/models.md).

One row is one *target event* with its window: the last ``T`` events of the account up to and
including the target, oldest first, right-padded (``EventSequences``: categorical
``(B, T, C)`` int64, numeric ``(B, T, F)``, times ``(B, T)`` in days, ``padding_mask (B, T)``
True = padding). The model outputs one fraud logit ``(B,)`` for the last real event.

1. Order attention. Event tokens ``x_j = Σ_c emb_c(cat_jc) + W num_j`` (``(B, T, d)``). Keys
   and values get a Time2Vec encoding of the event's age, ``x_j + P·Time2Vec(log1p(t_target -
   t_j))``; the query is a learnable summary token without time encoding. One fused
   ``masked_sdpa`` call (``tempattn.nn.MultiheadAttention`` with ``key_padding_mask``) gives
   the summary ``(B, d)``; a sequence without real events attends to nothing and yields zeros
   (never NaN).
2. Feature attention. Each feature of the target event is a token (an embedding per
   categorical field, ``x_f w_f + b_f`` per numeric feature), and so is each engineered
   feature, computed from the window: the amount's z-score against the earlier events
   (``asinh``-compressed), ``log1p`` of the days since the previous event, of the number of
   events in the last ``window_days`` and of the history length. A CLS token and one
   self-attention block over these ``1 + C + F + 4`` tokens give ``(B, d)``.
3. ``[order; feature] (B, 2d)`` → optional MLP → ``(B, d)``.
4. Mixture-of-experts feed-forward (residual; top-k softmax gating, ``top_k = n_experts`` is
   soft gating; Gaussian gate noise in training only, so eval is deterministic; Switch
   load-balancing loss) → LayerNorm → linear → logit.

``tsa_gated`` encodes a second sequence (e.g. the merchant's / peers' recent events) with its
own order attention, with ages measured to the target's time, and mixes the two summaries by
``h = g·h_own + (1 - g)·h_peer``, ``g = sigmoid(W [h_own; h_peer] + b)`` (elementwise).

Leak-free: a window ends at its target, so nothing later can enter it; padded entries are
zeroed before any use and masked in attention, so the logit is bit-identical whatever the
padded values; a peer event later than the target raises ``ValueError``.

Data (``data.py``): ``synthetic`` (scenarios whose clean fraud indicator is identifiable from
the window, plus label noise, so the Bayes-optimal ROC-AUC is known: ``bayes_optimal_auc``) and
``cdnow`` (real CDNOW purchase histories with INJECTED anomaly labels, semi-synthetic).
Metrics (``train.py``): ROC-AUC and PR-AUC (average precision); the baseline is a logistic
regression on the last event's raw features.
"""
from .model import TSA, TSAGated


def build_tsa(**kw) -> TSA:
    """``TSA(**kw)``; defaults fit the synthetic data (two categorical fields (8, 3), two numeric features)."""
    return TSA(**kw)


def build_tsa_gated(**kw) -> TSAGated:
    """``TSAGated(**kw)``: same arguments as :func:`build_tsa`; ``forward(events, peer)``."""
    return TSAGated(**kw)


__all__ = ["TSA", "TSAGated", "build_tsa", "build_tsa_gated"]
