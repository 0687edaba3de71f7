"""Host launchers of decay_attention, one per backend."""
from ..common.launcher import extension_op, fused_backward, unsupported
from .reference import decay_attention_reference

# q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, True, True, False, False, True)


def forward(backend, q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias, window, eps, dropout_p, seed,
            scale):
    tensors = (q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias)
    config = (window, eps, dropout_p, seed, scale)
    if backend == "reference":
        return decay_attention_reference(*tensors, *config)
    if backend == "cpu":
        return extension_op("decay_attention_fwd")(*tensors, *config)
    unsupported(backend, "decay_attention")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias,
             window, eps, dropout_p, seed, scale):
    tensors = (q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias)
    config = (window, eps, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("decay_attention_bwd", grad_out, grad_lse, out, lse, tensors, config)
    unsupported(backend, "decay_attention")
