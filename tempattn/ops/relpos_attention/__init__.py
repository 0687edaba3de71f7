"""relpos_attention: causal attention with a learned relative-position bias (T5 / Shaw style).

    Delta_ij = p_i - j,   p_i = i + Tk - Tq          (bottom-right alignment)
    s_ij     = scale * q_i . k_j + key_bias_j + rel_bias[h, index(Delta_ij)]
    out_i    = sum_j softmax_j(s_i) v_j                over admissible j

``window=W``: admissible iff ``0 <= Delta_ij <= W`` and the key is valid;
``rel_bias`` is ``(H, W + 1)`` and ``index(Delta) = Delta``; compute and memory O(T*W).
``window=None``: admissible iff ``Delta_ij >= 0``; ``index(Delta) = min(Delta, R - 1)``
(distances past the table share its last entry).

    d rel_bias[h, r] = sum_{b, i, j : index(Delta_ij) = r} dS_ij

reduced deterministically (no float atomics).
"""
from .op import relpos_attention

__all__ = ["relpos_attention"]
