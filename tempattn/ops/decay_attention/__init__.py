"""decay_attention: causal attention with a learned mixture of exponential decays.

A multi-scale, learnable generalisation of ALiBi. Per head ``h`` and scale ``s``::

    a_hs     = softmax_s(alpha_logits[h])                    mixing weights
    Delta_ij = p_i - j  (p_i = i + Tk - Tq),  or  times[b, p_i] - times[b, j];  clamped at 0
    m_ij     = log( sum_s a_hs * exp(log_gamma[h, s] * Delta_ij) + eps )
             = logaddexp( logsumexp_s(log a_hs + log_gamma[h, s] * Delta_ij), log eps )
    s_ij     = scale * q_i . k_j + key_bias_j + m_ij
    out_i    = sum_j softmax_j(s_i) v_j                      over admissible j

Admissible iff ``j <= p_i`` and the key is valid; ``window=W`` also drops keys with
``p_i - j > W`` (index distance, also with ``times``: a documented approximation that
makes compute O(T*W)). ``log_gamma <= 0`` (gamma = exp(log_gamma) in (0, 1]).
``eps = 0`` gives the pure mixture. The bias is computed inside the tile loop: nothing
of size T x T is stored by the fused kernels. ``times`` gets no gradient; the gradients
of ``log_gamma`` and ``alpha_logits`` are reduced deterministically.
"""
from .op import decay_attention

__all__ = ["decay_attention"]
