"""Dense PyTorch reference of relpos_attention (see the package docstring for the maths)."""
from ..common.reference import admissible_mask, attention_reference, position_offsets


def relpos_attention_reference(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale):
    """rel_bias (H, R); window: int >= 0, or None; other shapes as masked_sdpa."""
    Tq, Tk = q.shape[2], k.shape[2]
    index = position_offsets(Tq, Tk, q.device).clamp(0, rel_bias.shape[1] - 1)
    score_mod = rel_bias[:, index].unsqueeze(0)  # (1, H, Tq, Tk)
    admissible = admissible_mask(key_valid, Tq, Tk, q.device, causal=True, window=window)
    return attention_reference(q, k, v, scale=scale, admissible=admissible, score_mod=score_mod, key_bias=key_bias,
                               dropout_p=dropout_p, seed=seed)
