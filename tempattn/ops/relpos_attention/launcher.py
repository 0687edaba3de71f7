"""relpos_attention's Triton launch: the core with the relative-position modifier."""
from ..common.declaration import Kernels
from ..common.launcher import triton_backward, triton_forward, triton_window, with_key_bias_grad


def _triton_args(rel_bias, key_valid, key_bias, window, dropout_p, seed, scale):
    return dict(mod="relpos_attention", key_valid=key_valid, key_bias=key_bias,
                mod_a=rel_bias, mod_b=None, times=None, causal=True,
                window=triton_window(window), eps=0.0, dropout_p=dropout_p, seed=seed, scale=scale)


def _forward(q, k, v, *rest):
    return triton_forward(q, k, v, **_triton_args(*rest))


def _backward(grad_out, out, grad_lse, lse, q, k, v, rel_bias, *rest):
    dq, dk, dv, dkb, band, _ = triton_backward(grad_out, out, grad_lse, lse, q, k, v, **_triton_args(rel_bias, *rest))
    return with_key_bias_grad((dq, dk, dv, band.sum(dim=(0, 2)).to(rel_bias.dtype)), dkb)


TRITON = Kernels(_forward, _backward)
