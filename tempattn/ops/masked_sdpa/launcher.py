"""Host launchers of masked_sdpa, one per backend."""
from ..common.launcher import extension_op, fused_backward, unsupported
from .reference import masked_sdpa_reference

# q, k, v, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, False, True)


def forward(backend, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale):
    if backend == "reference":
        return masked_sdpa_reference(q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale)
    if backend == "cpu":
        return extension_op("masked_sdpa_fwd")(q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale)
    unsupported(backend, "masked_sdpa")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale):
    tensors = (q, k, v, key_valid, key_bias)
    config = (causal, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("masked_sdpa_bwd", grad_out, grad_lse, out, lse, tensors, config)
    unsupported(backend, "masked_sdpa")
