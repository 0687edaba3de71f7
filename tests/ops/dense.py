"""An independent dense formula for the three operators, written directly from docs/contract.md.

It shares no code with tempattn: index tables are built with Python loops and the
decay mixture is evaluated in linear space, log(sum_s a_s * gamma_s**Delta + eps).
``compute_dtype`` lets tests build the same-precision PyTorch baseline.
"""
import math

import torch


def positions(Tq, Tk):
    return [i + Tk - Tq for i in range(Tq)]


def allowed_table(Tq, Tk, causal, window):
    rows = []
    for p in positions(Tq, Tk):
        rows.append([(not causal or 0 <= p - j) and (window is None or p - j <= window) for j in range(Tk)])
    return torch.tensor(rows, dtype=torch.bool)


def relpos_bias(rel_bias, Tq, Tk):
    R = rel_bias.shape[1]
    index = torch.tensor([[min(max(p - j, 0), R - 1) for j in range(Tk)] for p in positions(Tq, Tk)])
    return rel_bias[:, index]  # (H, Tq, Tk)


def decay_bias(log_gamma, alpha_logits, Tq, Tk, times, eps):
    a = torch.softmax(alpha_logits, dim=-1)  # (H, S)
    gamma = torch.exp(log_gamma)
    if times is None:
        delta = torch.tensor([[max(p - j, 0) for j in range(Tk)] for p in positions(Tq, Tk)], dtype=a.dtype)[None]
    else:
        pos = torch.tensor(positions(Tq, Tk))
        delta = (times[:, pos][:, :, None] - times[:, None, :]).clamp_min(0)  # (B, Tq, Tk)
    mix = (a[None, :, None, None, :] * gamma[None, :, None, None, :] ** delta[:, None, :, :, None]).sum(-1)
    return torch.log(mix + eps)  # (B|1, H, Tq, Tk)


def dense_attention(q, k, v, *, allowed, bias=None, key_bias=None, key_valid=None, scale=None, keep=None,
                    dropout_p=0.0, compute_dtype=torch.float64):
    """out (B,H,Tq,Dv) and lse (B,H,Tq) computed in ``compute_dtype``; empty rows give 0 / -inf."""
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    if key_bias is not None:
        kb = key_bias.to(compute_dtype)
        s = s + (kb[:, None, None, :] if kb.dim() == 2 else kb[:, :, None, :])
    if bias is not None:
        s = s + bias.to(compute_dtype)
    ok = allowed[None, None] if allowed.dim() == 2 else allowed
    if key_valid is not None:
        ok = ok & key_valid[:, None, None, :]
    c = torch.where(ok, s, torch.full_like(s, -torch.inf)).amax(-1, keepdim=True).detach()
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    w = torch.where(ok, torch.exp(s - c), torch.zeros_like(s))
    total = w.sum(-1, keepdim=True)
    nonempty = total > 0
    p = w / torch.where(nonempty, total, torch.ones_like(total))
    lse = torch.where(nonempty, c + torch.log(torch.where(nonempty, total, torch.ones_like(total))),
                      torch.full_like(total, -torch.inf))[..., 0]
    if keep is not None:
        p = p * keep.to(compute_dtype) / (1.0 - dropout_p)
    return torch.einsum("bhij,bhjd->bhid", p, v), lse
