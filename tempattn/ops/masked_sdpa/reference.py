"""Dense PyTorch reference of masked_sdpa (see the package docstring for the maths)."""
from ..common.reference import admissible_mask, attention_reference


def masked_sdpa_reference(q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale):
    """q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,Dv), key_valid (B,Tk) bool or None, key_bias (B,H,Tk) or None."""
    Tq, Tk = q.shape[2], k.shape[2]
    admissible = admissible_mask(key_valid, Tq, Tk, q.device, causal)
    return attention_reference(q, k, v, scale=scale, admissible=admissible, key_bias=key_bias,
                               dropout_p=dropout_p, seed=seed)
