"""decay_attention's Triton launch: the core with the decay-mixture modifier."""
import torch

from ..common.declaration import Kernels
from ..common.launcher import triton_backward, triton_forward, triton_window, with_key_bias_grad


def _triton_args(log_gamma, alpha_logits, times, key_valid, key_bias, window, eps, dropout_p, seed, scale):
    return dict(mod="decay_attention", key_valid=key_valid, key_bias=key_bias,
                mod_a=log_gamma.float().contiguous(),
                mod_b=torch.log_softmax(alpha_logits.float(), dim=-1).contiguous(), times=times, causal=True,
                window=triton_window(window), eps=eps, dropout_p=dropout_p, seed=seed, scale=scale)


def _alpha_logits_grad(d_log_alpha, alpha_logits):
    """Chain rule through log_softmax: d alpha_t = g_t - softmax_t * sum_s g_s."""
    return d_log_alpha - torch.softmax(alpha_logits, dim=-1) * d_log_alpha.sum(dim=-1, keepdim=True)


def _forward(q, k, v, *rest):
    return triton_forward(q, k, v, **_triton_args(*rest))


def _backward(grad_out, out, grad_lse, lse, q, k, v, log_gamma, alpha_logits, *rest):
    dq, dk, dv, dkb, d_lg, d_la = triton_backward(grad_out, out, grad_lse, lse, q, k, v,
                                                  **_triton_args(log_gamma, alpha_logits, *rest))
    d_log_gamma = d_lg.sum(dim=(0, 2)).to(log_gamma.dtype)
    d_alpha = _alpha_logits_grad(d_la.sum(dim=(0, 2)).to(alpha_logits.dtype), alpha_logits)
    return with_key_bias_grad((dq, dk, dv, d_log_gamma, d_alpha), dkb)


TRITON = Kernels(_forward, _backward)
