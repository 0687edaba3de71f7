"""Host-side helpers of the Triton launches shared by the operators (the C++ kernels need none)."""
import torch

from .autograd import row_delta


def _triton_core(q):
    if q.dtype == torch.float64:
        raise TypeError("tempattn: the triton backend takes float16, bfloat16 or float32, got float64; "
                        "hint: use backend='cpu' or 'reference' for float64")
    from tempattn.kernels import common
    return common


def triton_window(window) -> int:
    """The Triton kernels' window argument: -1 for none (their launch boundary's sentinel)."""
    return -1 if window is None else window


def triton_forward(q, k, v, **kw):
    """The Triton core's forward: (out, lse)."""
    return _triton_core(q).attention_forward(q, k, v, **kw)


def triton_backward(grad_out, out, grad_lse, lse, q, k, v, **kw):
    """The Triton core's backward: (dq, dk, dv, d key_bias or None, modifier partial A, partial B)."""
    return _triton_core(q).attention_backward(grad_out, row_delta(grad_out, out, grad_lse), lse, q, k, v, **kw)


def with_key_bias_grad(grads, dkb):
    return list(grads) + ([] if dkb is None else [dkb])
