"""Argument checks shared by the three operators.

Shape, dtype and device checks are O(1) host work. Value checks (non-finite
parameters, ``log_gamma > 0``, decreasing ``times``) read tensor data, so they run
for CPU tensors always and for GPU tensors only under ``TEMPATTN_DEBUG=1`` (no
device sync in the hot path), and never while ``torch.compile`` traces.
"""
import os
import sys
from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_SET = frozenset(FLOAT_DTYPES)
MAX_HEAD_DIM = 256


def _fail(op: str, name: str, expected: str, got, hint: str, exc=ValueError):
    raise exc(f"{op}: `{name}` must be {expected}, got {got}; hint: {hint}")


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"
    return f"{type(t).__name__} {t!r}"


def check_tensor(op: str, name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(op, name, f"a torch.Tensor of shape {layout}", _describe(t), "convert it with torch.as_tensor", TypeError)
    if t.dim() != ndim:
        _fail(op, name, f"{ndim}-D {layout}", f"{t.dim()}-D shape {tuple(t.shape)}",
              "use the (B, H, T, D) layout of F.scaled_dot_product_attention" if ndim == 4
              else f"reshape it to {layout}")


def check_float(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        _fail(op, name, "float16, bfloat16, float32 or float64", t.dtype, f"cast it, e.g. `{name}.float()`", TypeError)


def check_qkv(op: str, q, k, v) -> None:
    if not qkv_well_formed(q, k, v):
        _explain_qkv(op, q, k, v)


def qkv_well_formed(q, k, v, max_head_dim: int = MAX_HEAD_DIM) -> bool:
    """One cheap pass accepting only inputs that _explain_qkv accepts (the hot path's check when the
    extension is not built; fastpath.qkv_layout is its C version)."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        return False
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    B, H, _, D = q.shape
    kB, kH, Tk, kD = k.shape
    vB, vH, vT, Dv = v.shape
    dtype = q.dtype
    return (dtype in _FLOAT_SET and k.dtype == dtype and v.dtype == dtype and kB == B and vB == B and kH == H
            and vH == H and kD == D and vT == Tk and 1 <= D <= max_head_dim and 1 <= Dv <= max_head_dim
            and q.stride(3) == 1 and k.stride(3) == 1 and v.stride(3) == 1
            and k.device == q.device and v.device == q.device)


def _explain_qkv(op: str, q, k, v) -> None:
    """Raises the error that names what is wrong with q, k or v."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, 4, "(B, H, T, D)")
        check_float(op, name, t)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _fail(op, name, f"of q's dtype {q.dtype}", t.dtype, "cast q, k and v to one dtype", TypeError)
        if t.device != q.device:
            _fail(op, name, f"on q's device {q.device}", t.device, "move q, k and v to one device")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        _fail(op, "k/v", f"of batch and heads (B, H) = {(B, H)} like q",
              f"k {tuple(k.shape)}, v {tuple(v.shape)}", "repeat shared KV heads before the call (no GQA broadcasting)")
    if k.shape[3] != D:
        _fail(op, "k", f"of head dim D = {D} like q", k.shape[3], "q and k must share the head dim")
    if v.shape[2] != k.shape[2]:
        _fail(op, "v", f"of length Tk = {k.shape[2]} like k", v.shape[2], "k and v must have the same length")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not 1 <= t.shape[3] <= MAX_HEAD_DIM:
            _fail(op, name, f"a head dim in [1, {MAX_HEAD_DIM}]", t.shape[3], "split the head into more heads")
        if t.stride(3) != 1:
            _fail(op, name, "contiguous in the last dim (stride 1)", f"stride {t.stride()}",
                  f"call `{name}.contiguous()`")


def check_lengths(op: str, Tq: int, Tk: int, causal: bool) -> None:
    if causal and Tq > Tk:
        _fail(op, "q", f"no longer than k under causal attention (Tq <= Tk = {Tk})", f"Tq = {Tq}",
              "bottom-right alignment puts query i at position i + Tk - Tq; pass at least as many keys as queries")


def canonical_key_valid(op: str, key_padding_mask, key_valid_mask, B: int, Tk: int, device) -> Optional[torch.Tensor]:
    """Both named conventions as one ``(B, Tk)`` bool tensor, True = attended (or None)."""
    if key_padding_mask is not None and key_valid_mask is not None:
        raise ValueError(f"{op}: pass only one of `key_padding_mask` (True = padding) and `key_valid_mask` "
                         "(True = real token), got both; hint: `key_valid_mask = ~key_padding_mask`")
    if key_padding_mask is not None:
        name, mask = "key_padding_mask", key_padding_mask
    else:
        name, mask = "key_valid_mask", key_valid_mask
    if mask is None:
        return None
    check_tensor(op, name, mask, 2, "(B, Tk) bool")
    if mask.dtype != torch.bool:
        hint = ("a float mask is ambiguous; pass additive scores as `key_bias`"
                if mask.is_floating_point() else "convert it with `.bool()` after checking its convention")
        _fail(op, name, "a bool tensor", mask.dtype, hint, TypeError)
    if tuple(mask.shape) != (B, Tk):
        _fail(op, name, f"of shape (B, Tk) = {(B, Tk)}", tuple(mask.shape), "one entry per key and batch row")
    if mask.device != device:
        _fail(op, name, f"on q's device {device}", mask.device, "move it with `.to(q.device)`")
    return ~mask if name == "key_padding_mask" else mask


def check_param(op: str, name: str, t, shape: tuple, layout: str, device) -> None:
    """A float parameter tensor of an exact shape on q's device."""
    if isinstance(t, torch.Tensor) and t.dtype in _FLOAT_SET and t.shape == shape and t.device == device:
        return
    check_tensor(op, name, t, len(shape), layout)
    check_float(op, name, t)
    if tuple(t.shape) != tuple(shape):
        _fail(op, name, f"of shape {layout} = {tuple(shape)}", tuple(t.shape), f"build it as {layout}")
    if t.device != device:
        _fail(op, name, f"on q's device {device}", t.device, "move it with `.to(q.device)`")


def canonical_key_bias(op: str, key_bias, B: int, H: int, Tk: int, device) -> Optional[torch.Tensor]:
    """``key_bias`` of shape (B, Tk) or (B, H, Tk) as a (B, H, Tk) view (or None)."""
    if key_bias is None:
        return None
    if isinstance(key_bias, torch.Tensor) and key_bias.dim() == 2:
        check_param(op, "key_bias", key_bias, (B, Tk), "(B, Tk)", device)
        return key_bias.unsqueeze(1).expand(B, H, Tk)
    check_param(op, "key_bias", key_bias, (B, H, Tk), "(B, H, Tk) or (B, Tk)", device)
    return key_bias


def check_dropout(op: str, dropout_p, seed) -> None:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        _fail(op, "dropout_p", "a float in [0, 1)", _describe(dropout_p), "pass e.g. dropout_p=0.1", TypeError)
    if not 0.0 <= dropout_p < 1.0:
        _fail(op, "dropout_p", "in [0, 1)", dropout_p, "dropout_p=1 would drop everything; use 0 <= p < 1")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            _fail(op, "seed", "an int or None", _describe(seed),
                  "pass seed=None to draw one from torch's generator", TypeError)
        if not 0 <= seed < 2**63:
            _fail(op, "seed", "in [0, 2**63)", seed, "reduce it, e.g. seed % 2**63")


def check_scale(op: str, scale) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        _fail(op, "scale", "a float or None", _describe(scale), "pass a Python float", TypeError)
    if not (scale == scale and abs(scale) != float("inf")):
        _fail(op, "scale", "finite", scale, "use scale=None for 1/sqrt(D)")


def check_window(op: str, window, allow_none: bool = True) -> None:
    if window is None:
        if not allow_none:
            _fail(op, "window", "an int >= 0", None, "pass window=W")
        return
    if isinstance(window, bool) or not isinstance(window, int):
        _fail(op, "window", "an int >= 0 or None", _describe(window), "pass window=W or window=None", TypeError)
    if window < 0:
        _fail(op, "window", "an int >= 0", window, "window=0 attends to the current position only")
    if window > sys.maxsize:
        _fail(op, "window", f"at most sys.maxsize = {sys.maxsize}", window,
              "a window of Tk keys or more already admits every causal key; pass window=None")


def value_checks_enabled(t: torch.Tensor) -> bool:
    """Data-reading checks run on CPU always, on GPU only under TEMPATTN_DEBUG=1, never while compiling."""
    if torch.compiler.is_compiling():
        return False
    return t.device.type == "cpu" or os.environ.get("TEMPATTN_DEBUG", "0") == "1"


def python_value_checks(t: torch.Tensor, backend: str) -> bool:
    """Whether the operator's value checks run here: the C++ cpu operators run their own (one pass,
    the same messages), so Python runs them for the other backends only."""
    return backend != "cpu" and value_checks_enabled(t)


def check_finite(op: str, name: str, t: torch.Tensor) -> None:
    """``t`` has no NaN or inf (the caller decides whether value checks run)."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        _fail(op, name, "finite", f"{bad} non-finite value(s)",
              "check the parameter's initialisation and learning rate")
