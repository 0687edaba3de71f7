"""The hot path's per-call checks: one C call each when tempattn._C is built (csrc/fastpath.cpp).

Each function only *recognises* the common, well-formed case; for anything else it returns its
"not recognised" value and the caller takes the general path, whose checks raise the error that
names the argument. The Python versions below are the specification and the fallback without the
extension; tests/ops/test_fastpath.py checks that the C versions accept exactly what they accept.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import validation as V
from .reference import accumulate_dtype

# eager_mode's results (csrc/fastpath.h).
EAGER_NO_GRAD, EAGER_GRAD, TRACE = 0, 1, 2

# Tensor types that run eagerly; any other subclass (fake tensors, functorch wrappers) takes the custom op.
_PLAIN_TENSORS = frozenset((torch.Tensor, torch.nn.Parameter))


def py_qkv_layout(q, k, v, causal: bool, max_head_dim: int) -> Optional[Tuple[int, int, int, int, int, str]]:
    """``(B, H, Tq, Tk, D, device type)`` when q, k, v pass every check of ``check_qkv`` and
    ``check_lengths``, else None."""
    if not V.qkv_well_formed(q, k, v, max_head_dim):
        return None
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if causal and Tq > Tk:
        return None
    return B, H, Tq, Tk, D, q.device.type


def py_param_width(t, q, rows: int, width: int) -> int:
    """``t.shape[1]`` when ``t`` is a 2-D ``(rows, width)`` tensor (any width >= 1 when ``width < 0``) on
    q's device, already in q's accumulation dtype and contiguous (as ``as_param`` makes it), else -1."""
    ok = (isinstance(t, torch.Tensor) and isinstance(q, torch.Tensor) and t.dim() == 2 and t.shape[0] == rows
          and t.shape[1] >= 1 and (width < 0 or t.shape[1] == width) and q.dtype in V.FLOAT_DTYPES
          and t.dtype == accumulate_dtype(q.dtype) and t.is_contiguous() and t.device == q.device)
    return t.shape[1] if ok else -1


def py_eager_mode(*tensors) -> int:
    """How an operator call on ``tensors`` (None allowed) runs outside torch.compile: ``TRACE`` under a
    dispatch mode, a functorch transform or with a tensor subclass (the custom op must be what they
    see); else ``EAGER_GRAD`` when a tensor requires grad in grad mode, else ``EAGER_NO_GRAD``."""
    if _get_current_dispatch_mode() is not None or torch._C._are_functorch_transforms_active():
        return TRACE
    needs_grad = False
    for t in tensors:
        if t is not None:
            if type(t) not in _PLAIN_TENSORS:
                return TRACE
            needs_grad = needs_grad or t.requires_grad
    return EAGER_GRAD if needs_grad and torch.is_grad_enabled() else EAGER_NO_GRAD


class Checks(NamedTuple):
    qkv_layout: Callable
    param_width: Callable
    eager_mode: Callable


PY_CHECKS = Checks(py_qkv_layout, py_param_width, py_eager_mode)


def _c_checks() -> Optional[Checks]:
    try:
        from tempattn import _C
    except (ImportError, OSError):  # not built: the Python versions serve (and the reference backend runs)
        return None
    return Checks(_C.qkv_layout, _C.param_width, _C.eager_mode) if hasattr(_C, "qkv_layout") else None


C_CHECKS = _c_checks()
C_OR_PY = C_CHECKS or PY_CHECKS  # outside torch.compile


def checks() -> Checks:
    """The C versions, or the Python ones while torch.compile traces (dynamo cannot trace into C)."""
    return PY_CHECKS if torch.compiler.is_compiling() else C_OR_PY
