"""Host launchers of relpos_attention, one per backend."""
from ..common.launcher import (extension_op, fused_backward, triton_backward, triton_forward, unsupported,
                               with_key_bias_grad)
from .reference import relpos_attention_reference

# q, k, v, rel_bias, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, True, False, True)


def _triton_args(rel_bias, key_valid, key_bias, window, dropout_p, seed, scale):
    return dict(mod="relpos_attention", key_valid=key_valid, key_bias=key_bias,
                mod_a=rel_bias, mod_b=None, times=None, causal=True,
                window=window, eps=0.0, dropout_p=dropout_p, seed=seed, scale=scale)


def forward(backend, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale):
    if backend == "reference":
        return relpos_attention_reference(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale)
    if backend == "cpu":
        return extension_op("relpos_attention_fwd")(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p,
                                                    seed, scale)
    if backend == "triton":
        return triton_forward(q, k, v, **_triton_args(rel_bias, key_valid, key_bias, window, dropout_p, seed, scale))
    unsupported(backend, "relpos_attention")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed,
             scale):
    tensors = (q, k, v, rel_bias, key_valid, key_bias)
    config = (window, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("relpos_attention_bwd", grad_out, grad_lse, out, lse, tensors, config)
    if backend == "triton":
        dq, dk, dv, dkb, band, _ = triton_backward(grad_out, grad_lse, out, lse, q, k, v,
                                                   **_triton_args(rel_bias, key_valid, key_bias, *config))
        return with_key_bias_grad((dq, dk, dv, band.sum(dim=(0, 2)).to(rel_bias.dtype)), dkb)
    unsupported(backend, "relpos_attention")
