"""masked_sdpa's Triton launch: the core without a score modifier."""
from ..common.declaration import Kernels
from ..common.launcher import triton_backward, triton_forward, with_key_bias_grad


def _triton_args(key_valid, key_bias, causal, dropout_p, seed, scale):
    return dict(mod="masked_sdpa", key_valid=key_valid, key_bias=key_bias,
                mod_a=None, mod_b=None, times=None, causal=causal,
                window=-1, eps=0.0, dropout_p=dropout_p, seed=seed, scale=scale)


def _forward(q, k, v, key_valid, key_bias, *config):
    return triton_forward(q, k, v, **_triton_args(key_valid, key_bias, *config))


def _backward(grad_out, out, grad_lse, lse, q, k, v, key_valid, key_bias, *config):
    dq, dk, dv, dkb, _, _ = triton_backward(grad_out, out, grad_lse, lse, q, k, v,
                                            **_triton_args(key_valid, key_bias, *config))
    return with_key_bias_grad((dq, dk, dv), dkb)


TRITON = Kernels(_forward, _backward)
