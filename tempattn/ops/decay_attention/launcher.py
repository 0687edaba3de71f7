"""Host launchers of decay_attention, one per backend."""
import torch

from ..common.launcher import (extension_op, fused_backward, triton_backward, triton_forward, unsupported,
                               with_key_bias_grad)
from .reference import decay_attention_reference

# q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias
DIFFERENTIABLE = (True, True, True, True, True, False, False, True)


def _triton_args(log_gamma, alpha_logits, times, key_valid, key_bias, window, eps, dropout_p, seed, scale):
    return dict(mod="decay_attention", key_valid=key_valid, key_bias=key_bias,
                mod_a=log_gamma.float().contiguous(),
                mod_b=torch.log_softmax(alpha_logits.float(), dim=-1).contiguous(), times=times, causal=True,
                window=window, eps=eps, dropout_p=dropout_p, seed=seed, scale=scale)


def _alpha_logits_grad(d_log_alpha, alpha_logits):
    """Chain rule through log_softmax: d alpha_t = g_t - softmax_t * sum_s g_s."""
    return d_log_alpha - torch.softmax(alpha_logits, dim=-1) * d_log_alpha.sum(dim=-1, keepdim=True)


def forward(backend, q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias, window, eps, dropout_p, seed,
            scale):
    tensors = (q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias)
    config = (window, eps, dropout_p, seed, scale)
    if backend == "reference":
        return decay_attention_reference(*tensors, *config)
    if backend == "cpu":
        return extension_op("decay_attention_fwd")(*tensors, *config)
    if backend == "triton":
        return triton_forward(q, k, v, **_triton_args(*tensors[3:], *config))
    unsupported(backend, "decay_attention")


def backward(backend, grad_out, grad_lse, out, lse, q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias,
             window, eps, dropout_p, seed, scale):
    tensors = (q, k, v, log_gamma, alpha_logits, times, key_valid, key_bias)
    config = (window, eps, dropout_p, seed, scale)
    if backend == "cpu":
        return fused_backward("decay_attention_bwd", grad_out, grad_lse, out, lse, tensors, config)
    if backend == "triton":
        dq, dk, dv, dkb, d_lg, d_la = triton_backward(grad_out, grad_lse, out, lse, q, k, v,
                                                      **_triton_args(*tensors[3:], *config))
        d_log_gamma = d_lg.sum(dim=(0, 2)).to(log_gamma.dtype)
        d_alpha = _alpha_logits_grad(d_la.sum(dim=(0, 2)).to(alpha_logits.dtype), alpha_logits)
        return with_key_bias_grad((dq, dk, dv, d_log_gamma, d_alpha), dkb)
    unsupported(backend, "decay_attention")
