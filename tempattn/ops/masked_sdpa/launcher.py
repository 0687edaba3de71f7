"""Host launchers of masked_sdpa, one per backend."""
from ..common.launcher import (extension_op, fused_backward, triton_backward, triton_forward, unsupported,
                               with_key_bias_grad)
from .reference import masked_sdpa_reference

# q, k, v, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, False, True)


def _triton_args(key_valid, key_bias, causal, dropout_p, seed, scale):
    return dict(mod="masked_sdpa", key_valid=key_valid, key_bias=key_bias,
                mod_a=None, mod_b=None, times=None, causal=causal,
                window=-1, eps=0.0, dropout_p=dropout_p, seed=seed, scale=scale)


def forward(backend, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale):
    if backend == "reference":
        return masked_sdpa_reference(q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale)
    if backend == "cpu":
        return extension_op("masked_sdpa_fwd")(q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale)
    if backend == "triton":
        return triton_forward(q, k, v, **_triton_args(key_valid, key_bias, causal, dropout_p, seed, scale))
    unsupported(backend, "masked_sdpa")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale):
    tensors = (q, k, v, key_valid, key_bias)
    config = (causal, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("masked_sdpa_bwd", grad_out, grad_lse, out, lse, tensors, config)
    if backend == "triton":
        dq, dk, dv, dkb, _, _ = triton_backward(grad_out, grad_lse, out, lse, q, k, v,
                                                **_triton_args(key_valid, key_bias, *config))
        return with_key_bias_grad((dq, dk, dv), dkb)
    unsupported(backend, "masked_sdpa")
