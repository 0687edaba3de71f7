"""Dense softmax attention in plain PyTorch: the executable spec shared by the three operators.

Each operator's ``reference.py`` builds its score modifier ``m`` (B|1, H, Tq, Tk)
and admissibility mask, then calls :func:`attention_reference`. O(T^2) memory,
written for clarity; accumulates in float32 (float64 for float64 inputs).
"""
from typing import Optional

import torch

from .philox import dropout_keep_mask


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def query_positions(Tq: int, Tk: int, device) -> torch.Tensor:
    """Absolute position p_i = i + Tk - Tq of each query row (bottom-right alignment)."""
    return torch.arange(Tq, device=device) + (Tk - Tq)


def position_offsets(Tq: int, Tk: int, device) -> torch.Tensor:
    """Delta_ij = p_i - j, shape (Tq, Tk)."""
    return query_positions(Tq, Tk, device)[:, None] - torch.arange(Tk, device=device)[None, :]


def attention_reference(q, k, v, *, scale: float, admissible: torch.Tensor, score_mod: Optional[torch.Tensor] = None,
                        key_bias: Optional[torch.Tensor] = None, dropout_p: float = 0.0, seed: int = 0):
    """out (B, H, Tq, Dv) in q's dtype and lse (B, H, Tq) in the accumulation dtype.

    admissible: bool, broadcastable to (B, H, Tq, Tk). score_mod: float, broadcastable
    likewise. key_bias: (B, H, Tk). Rows with no admissible key give out = 0, lse = -inf,
    and zero gradients (the double-`where` keeps NaN out of the backward).
    """
    acc = accumulate_dtype(q.dtype)
    s = scale * torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2))
    if key_bias is not None:
        s = s + key_bias.to(acc)[:, :, None, :]
    if score_mod is not None:
        s = s + score_mod.to(acc)
    s = s.masked_fill(~admissible, float("-inf"))
    row_max = s.detach().amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)  # NaN rows stay NaN
    e = torch.exp(s - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    nonempty = denom != 0  # a NaN sum is a non-finite row, not an empty one: its NaN reaches out and lse
    safe_denom = torch.where(nonempty, denom, torch.ones_like(denom))
    p = e / safe_denom
    lse = torch.where(nonempty, row_max + torch.log(safe_denom), torch.full_like(denom, float("-inf"))).squeeze(-1)
    if dropout_p > 0.0:
        B, H, Tq, Tk = p.shape
        keep = dropout_keep_mask(seed, B, H, Tq, Tk, dropout_p, device=p.device)
        p = p * keep / (1.0 - dropout_p)
    out = torch.matmul(p, v.to(acc))
    return out.to(q.dtype), lse


def admissible_mask(key_valid: Optional[torch.Tensor], Tq: int, Tk: int, device, causal: bool,
                    window: Optional[int] = None) -> torch.Tensor:
    """Bool (B|1, 1, Tq, Tk): key valid, and 0 <= Delta_ij (<= window) when causal."""
    mask = torch.ones((1, 1, Tq, Tk), dtype=torch.bool, device=device)
    if key_valid is not None:
        mask = mask & key_valid[:, None, None, :]
    if causal:
        delta = position_offsets(Tq, Tk, device)
        mask = mask & (delta >= 0)
        if window is not None:
            mask = mask & (delta <= window)
    return mask
