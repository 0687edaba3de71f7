"""Host launchers of relpos_attention, one per backend."""
from ..common.launcher import extension_op, fused_backward, unsupported
from .reference import relpos_attention_reference

# q, k, v, rel_bias, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, True, False, True)


def forward(backend, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale):
    if backend == "reference":
        return relpos_attention_reference(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale)
    if backend == "cpu":
        return extension_op("relpos_attention_fwd")(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p,
                                                    seed, scale)
    unsupported(backend, "relpos_attention")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed,
             scale):
    tensors = (q, k, v, rel_bias, key_valid, key_bias)
    config = (window, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("relpos_attention_bwd", grad_out, grad_lse, out, lse, tensors, config)
    unsupported(backend, "relpos_attention")
