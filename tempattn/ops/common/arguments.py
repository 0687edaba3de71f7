"""Turns the public keywords shared by the three operators into the custom ops' arguments."""
import math
from typing import NamedTuple, Optional

import torch

from ... import _dispatch
from . import fastpath
from . import validation as V
from .reference import accumulate_dtype


class CommonArgs(NamedTuple):
    key_valid: Optional[torch.Tensor]  # (B, Tk) bool, True = attended
    key_bias: Optional[torch.Tensor]   # (B, H, Tk) contiguous, accumulation dtype
    dropout_p: float
    seed: int
    scale: float
    backend: str
    checks: fastpath.Checks  # the hot path's checks for this call (fastpath.checks())


def draw_seed() -> int:
    """A dropout seed from torch's default generator (so torch.manual_seed reproduces it)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64).item())


def as_param(t: Optional[torch.Tensor], q: torch.Tensor) -> Optional[torch.Tensor]:
    """A float parameter in q's accumulation dtype, contiguous (autograd casts its gradient back)."""
    if t is None:
        return None
    acc = accumulate_dtype(q.dtype)
    return t if t.dtype == acc and t.is_contiguous() else t.to(acc).contiguous()


def common_args(op: str, q, k, v, *, causal: bool, key_padding_mask, key_valid_mask, key_bias, dropout_p, seed,
                scale, backend) -> CommonArgs:
    checks = fastpath.checks()
    layout = checks.qkv_layout(q, k, v, causal, V.MAX_HEAD_DIM)
    if layout is None:  # something is wrong: the general checks raise the error that names it
        V.check_qkv(op, q, k, v)
        V.check_lengths(op, q.shape[2], k.shape[2], causal)
        raise RuntimeError(f"{op}: internal error: the fast check refused q, k, v that the full checks accept")
    B, H, _, Tk, D, device_type = layout
    backend = _dispatch.resolve(op, backend, device_type, q)
    if (key_padding_mask is None and key_valid_mask is None and key_bias is None and dropout_p == 0.0
            and type(dropout_p) is float and seed is None and scale is None):
        # Every optional argument at its default: the common call, with nothing left to check.
        return CommonArgs(None, None, 0.0, 0, 1.0 / math.sqrt(D), backend, checks)
    device = q.device
    key_valid = V.canonical_key_valid(op, key_padding_mask, key_valid_mask, B, Tk, device)
    key_bias = V.canonical_key_bias(op, key_bias, B, H, Tk, device)
    V.check_dropout(op, dropout_p, seed)
    V.check_scale(op, scale)
    if dropout_p > 0.0 and seed is None:
        seed = draw_seed()
    return CommonArgs(
        key_valid=None if key_valid is None else key_valid.contiguous(),
        key_bias=as_param(key_bias, q),
        dropout_p=float(dropout_p),
        seed=0 if seed is None else int(seed),
        scale=1.0 / math.sqrt(D) if scale is None else float(scale),
        backend=backend,
        checks=checks,
    )
