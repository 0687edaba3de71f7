"""masked_sdpa: scaled dot-product attention with named key masks.

    s_ij   = scale * q_i . k_j + key_bias_j
    out_i  = sum_j softmax_j(s_i) v_j        over admissible j

Admissible: the key is valid (``key_valid_mask`` True, or ``key_padding_mask``
False), and ``Delta_ij = p_i - j >= 0`` when ``causal``, with the query at absolute
position ``p_i = i + Tk - Tq`` (bottom-right alignment). A row with no admissible
key returns zeros (lse = -inf) and zero gradients.
"""
from .op import masked_sdpa

__all__ = ["masked_sdpa"]
