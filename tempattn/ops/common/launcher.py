"""Host-side helpers shared by the operators' launchers."""
import torch

from .autograd import row_delta


def extension_op(name: str):
    """``torch.ops.tempattn_C.<name>``, loading the extension on first use."""
    import tempattn._C  # noqa: F401  (registers the ops)
    return getattr(torch.ops.tempattn_C, name)


def fused_backward(op_name: str, grad_out, grad_lse, out, lse, tensors, config):
    """Call a fused backward kernel ``(grad_out, delta, lse, *tensors, *config) -> [grads]``.

    It takes ``delta = rowsum(dO*O) - dlse`` instead of ``out`` and returns the
    gradients of the present differentiable tensors, in order.
    """
    delta = row_delta(grad_out, out, grad_lse)
    return list(extension_op(op_name)(grad_out, delta, lse, *tensors, *config))


def unsupported(backend: str, op: str):
    raise RuntimeError(f"{op}: backend {backend!r} has no kernel for this operator in this build")


def _triton_core(q):
    if q.dtype == torch.float64:
        raise TypeError("tempattn: the triton backend takes float16, bfloat16 or float32, got float64; "
                        "hint: use backend='cpu' or 'reference' for float64")
    from tempattn.kernels import common
    return common


def triton_forward(q, k, v, **kw):
    """The Triton core's forward: (out, lse)."""
    return _triton_core(q).attention_forward(q, k, v, **kw)


def triton_backward(grad_out, grad_lse, out, lse, q, k, v, **kw):
    """The Triton core's backward: (dq, dk, dv, d key_bias or None, modifier partial A, partial B)."""
    return _triton_core(q).attention_backward(grad_out, row_delta(grad_out, out, grad_lse), lse, q, k, v, **kw)


def with_key_bias_grad(grads, dkb):
    return list(grads) + ([] if dkb is None else [dkb])
