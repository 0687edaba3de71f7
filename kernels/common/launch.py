"""Host side of the Triton core: block sizes, argument packing, grids and the fixed-order reductions."""
import math
import os
from dataclasses import dataclass

import torch
import triton

from .core import attention_bwd_dkdv_kernel, attention_bwd_dq_kernel, attention_fwd_kernel
from .score_mods import MOD_DECAY, MOD_NONE, MOD_RELPOS


@dataclass(frozen=True)
class Modifier:
    """A score modifier as the host sees it (the kernel side is in score_mods.py).

    code: the kernels' MOD constexpr. partials: how many (B, H, Tq, width) float32 gradient
    partials its dQ pass writes (width: mod_a.shape[1]); zeroed: whether they must start at zero
    (written sparsely) rather than being written in full.
    """
    code: int
    partials: int
    zeroed: bool


# The score modifier of each operator, by the name its host launcher passes as ``mod``. ``mod_a`` /
# ``mod_b`` are the modifier's parameters: relpos rel_bias (H, R) / None; decay log_gamma (H, S) /
# log_softmax(alpha_logits) (H, S); masked_sdpa None / None.
MODIFIERS = {
    "masked_sdpa": Modifier(MOD_NONE.value, partials=0, zeroed=False),
    "relpos_attention": Modifier(MOD_RELPOS.value, partials=1, zeroed=True),   # band (B, H, Tq, R)
    "decay_attention": Modifier(MOD_DECAY.value, partials=2, zeroed=False),    # d log_gamma, d log a (B, H, Tq, S)
}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _blocks(head_dim: int):
    """(BLOCK_M, BLOCK_N): small tiles under the interpreter, smaller for wide heads on GPU."""
    if _interpreting():
        return 16, 16
    return (64, 64) if head_dim <= 64 else (64, 32) if head_dim <= 128 else (32, 32)


def _padded(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _precision(dtype: torch.dtype) -> str:
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def _common(q, k, v, *, mod, key_valid, key_bias, mod_a, mod_b, times, causal, window, eps, dropout_p, seed, scale):
    """(modifier, tensor pointers, runtime scalars, constexprs) shared by the three kernels."""
    modifier = MODIFIERS[mod]
    B, H, Tq, D = q.shape
    Tk, Dv = k.shape[2], v.shape[3]
    dummy = torch.empty(1, device=q.device, dtype=torch.float32)
    S = mod_a.shape[1] if modifier.code == MOD_DECAY.value else 1
    R = mod_a.shape[1] if modifier.code == MOD_RELPOS.value else 1
    block_m, block_n = _blocks(max(D, Dv))
    pointers = [key_valid.view(torch.uint8) if key_valid is not None else dummy,
                key_bias if key_bias is not None else dummy,
                mod_a if mod_a is not None else dummy, mod_b if mod_b is not None else dummy,
                times if times is not None else dummy]
    threshold = min(int(dropout_p * 4294967296.0), 0xFFFFFFFF)
    scalars = [H, Tq, Tk, D, Dv, R, max(window, 0), scale, math.log(max(eps, 1e-300)), seed,
               threshold, 1.0 / (1.0 - dropout_p)]
    constexprs = dict(MOD=modifier.code, S=S, CAUSAL=causal, WINDOWED=window >= 0, HAS_VALID=key_valid is not None,
                      HAS_BIAS=key_bias is not None, HAS_TIMES=times is not None, HAS_EPS=eps > 0,
                      DROPOUT=dropout_p > 0, PRECISION=_precision(q.dtype), BLOCK_M=block_m, BLOCK_N=block_n,
                      HEAD_DIM=_padded(D), HEAD_DIM_V=_padded(Dv))
    return modifier, pointers, scalars, constexprs


def _strides(*tensors):
    return [s for t in tensors for s in t.stride()[:3]]


def attention_forward(q, k, v, **kw):
    """out (B, H, Tq, Dv) in q's dtype and lse (B, H, Tq) float32."""
    B, H, Tq, _ = q.shape
    _, pointers, scalars, constexprs = _common(q, k, v, **kw)
    out = torch.empty((B, H, Tq, v.shape[3]), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, Tq), device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(Tq, constexprs["BLOCK_M"]), B * H)
    attention_fwd_kernel[grid](q, k, v, out, lse, *pointers, *_strides(q, k, v, out), *scalars, **constexprs)
    return out, lse


def attention_backward(grad_out, delta, lse, q, k, v, **kw):
    """(dq, dk, dv, d key_bias or None, partial_0 or None, partial_1 or None).

    The partials are the modifier's per-row parameter gradients, reduced by the caller:
    relpos (band (B, H, Tq, R), None); decay (d log_gamma, d log a), each (B, H, Tq, S);
    masked_sdpa (None, None): nothing is allocated for a modifier without parameters.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    modifier, pointers, scalars, constexprs = _common(q, k, v, **kw)
    dq = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    dk = torch.empty((B, H, Tk, D), device=q.device, dtype=k.dtype)
    dv = torch.empty((B, H, Tk, v.shape[3]), device=q.device, dtype=v.dtype)
    dkb = torch.empty((B, H, Tk), device=q.device, dtype=torch.float32) if kw["key_bias"] is not None else None
    alloc = torch.zeros if modifier.zeroed else torch.empty
    partials = [alloc((B, H, Tq, kw["mod_a"].shape[1]), device=q.device, dtype=torch.float32)
                for _ in range(modifier.partials)]
    partials += [None] * (2 - len(partials))
    strides = _strides(q, k, v, grad_out)
    delta = delta.float().contiguous()
    grid_k = (triton.cdiv(Tk, constexprs["BLOCK_N"]), B * H)
    attention_bwd_dkdv_kernel[grid_k](q, k, v, grad_out, lse, delta, dk, dv, dkb if dkb is not None else delta,
                                      *pointers, *strides, *scalars, **constexprs)
    grid_q = (triton.cdiv(Tq, constexprs["BLOCK_M"]), B * H)
    s_pad = max(2, triton.next_power_of_2(constexprs["S"])) if modifier.code == MOD_DECAY.value else 1
    partial_ptrs = [p if p is not None else delta for p in partials]  # unused slots: never dereferenced
    attention_bwd_dq_kernel[grid_q](q, k, v, grad_out, lse, delta, dq, *partial_ptrs, *pointers, *strides,
                                    *scalars, **constexprs, S_PAD=s_pad)
    return (dq, dk, dv, dkb, *partials)
