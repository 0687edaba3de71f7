"""Dense PyTorch reference of decay_attention (see the package docstring for the maths)."""
import math

import torch

from ..common.reference import admissible_mask, attention_reference, position_offsets, query_positions


def decay_offsets(times, Tq: int, Tk: int, device, dtype) -> torch.Tensor:
    """Delta_ij clamped at 0: (1, Tq, Tk) from positions, or (B, Tq, Tk) from ``times`` (B, Tk)."""
    if times is None:
        return position_offsets(Tq, Tk, device).clamp_min(0).to(dtype).unsqueeze(0)
    query_times = times[:, query_positions(Tq, Tk, device)]
    return (query_times[:, :, None] - times[:, None, :]).clamp_min(0).to(dtype)


def decay_score_mod(log_gamma, alpha_logits, delta, eps: float) -> torch.Tensor:
    """m_ij (B|1, H, Tq, Tk) for log_gamma, alpha_logits (H, S) and delta (B|1, Tq, Tk)."""
    log_a = torch.log_softmax(alpha_logits, dim=-1)
    terms = log_a[None, :, None, None, :] + log_gamma[None, :, None, None, :] * delta[:, None, :, :, None]
    mix = torch.logsumexp(terms, dim=-1)
    return torch.logaddexp(mix, torch.full_like(mix, math.log(eps))) if eps > 0 else mix


def decay_attention_reference(q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias, window, eps, dropout_p,
                              seed, scale):
    """log_gamma, alpha_logits (H, S); times (B, Tk) or None; window int >= 0 or None."""
    Tq, Tk = q.shape[2], k.shape[2]
    delta = decay_offsets(times, Tq, Tk, q.device, log_gamma.dtype)
    score_mod = decay_score_mod(log_gamma, alpha_logits, delta, eps)
    admissible = admissible_mask(key_valid, Tq, Tk, q.device, causal=True, window=window)
    return attention_reference(q, k, v, scale=scale, admissible=admissible, score_mod=score_mod, key_bias=key_bias,
                               dropout_p=dropout_p, seed=seed)
