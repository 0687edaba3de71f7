"""decay_attention as a torch.library custom op (fake + autograd) and its public function."""
import math
from typing import Optional

from torch import Tensor

from ..common import validation as V
from ..common.arguments import CommonArgs, as_param, common_args
from ..common.declaration import AttentionOp, ConfigArg, TensorArg, declare_attention_op
from . import launcher
from .reference import decay_attention_reference


DECAY_ATTENTION = declare_attention_op(AttentionOp(
    name="decay_attention",
    op_tensors=(TensorArg("log_gamma"), TensorArg("alpha_logits"), TensorArg("times", "Tensor?", differentiable=False)),
    op_config=(ConfigArg("window", "SymInt?"), ConfigArg("eps", "float")),
    reference=decay_attention_reference,
    triton=launcher.TRITON,
))


def _decay_params(op: str, log_gamma, alpha_logits, q, a: CommonArgs):
    """Checked ``(log_gamma, alpha_logits)``, as the kernels take them."""
    H = q.shape[1]
    width = a.checks.param_width(log_gamma, q, H, -1)
    if width < 0 or a.checks.param_width(alpha_logits, q, H, width) < 0:  # not kernel-ready as they are
        _check_decay_shapes(op, log_gamma, alpha_logits, H, q.device)
        log_gamma, alpha_logits = as_param(log_gamma, q), as_param(alpha_logits, q)
    if V.python_value_checks(log_gamma, a.backend):
        _check_decay_values(op, log_gamma, alpha_logits)
    return log_gamma, alpha_logits


def _check_decay_values(op: str, log_gamma, alpha_logits) -> None:
    V.check_finite(op, "log_gamma", log_gamma)
    V.check_finite(op, "alpha_logits", alpha_logits)
    if bool((log_gamma > 0).any()):
        raise ValueError(f"{op}: `log_gamma` must be <= 0 (decay rates gamma = exp(log_gamma) in (0, 1]), got max "
                         f"{float(log_gamma.max()):.4g}; hint: parametrise it as -softplus(x) or log(sigmoid(x))")


def _check_decay_shapes(op: str, log_gamma, alpha_logits, H: int, device) -> None:
    """Raises the error naming what is wrong with the type, shape, dtype or device of log_gamma or alpha_logits."""
    V.check_tensor(op, "log_gamma", log_gamma, 2, "(H, S)")
    V.check_param(op, "log_gamma", log_gamma, (H, max(log_gamma.shape[1], 1)), "(H, S) with S >= 1", device)
    V.check_param(op, "alpha_logits", alpha_logits, tuple(log_gamma.shape), "(H, S) like log_gamma", device)


def _check_eps(op: str, eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{op}: `eps` must be a float >= 0, got {type(eps).__name__}; hint: the default is 1e-8")
    if not (0.0 <= eps < math.inf):
        raise ValueError(f"{op}: `eps` must be a finite float >= 0, got {eps}; hint: the default is 1e-8")


def _relative_times(op: str, times, B: int, Tk: int, q, backend: str) -> Optional[Tensor]:
    """Checked ``times`` (B, Tk) shifted to start at 0 per row (keeps float32 precise for epoch seconds)."""
    if times is None:
        return None
    V.check_param(op, "times", times, (B, Tk), "(B, Tk)", q.device)
    times = times.detach()
    if V.python_value_checks(times, backend):
        _check_times_values(op, times)
    return as_param(times - times[:, :1], q)


def _check_times_values(op: str, times: Tensor) -> None:
    V.check_finite(op, "times", times)
    if times.shape[1] > 1 and bool((times[:, 1:] < times[:, :-1]).any()):
        raise ValueError(f"{op}: `times` must be non-decreasing along each row, got a decrease; "
                         "hint: sort the events by time (padding can repeat the last timestamp)")


def decay_attention(q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor, alpha_logits: Tensor, *,
                    times: Optional[Tensor] = None, eps: float = 1e-8, window: Optional[int] = None,
                    key_padding_mask: Optional[Tensor] = None, key_valid_mask: Optional[Tensor] = None,
                    key_bias: Optional[Tensor] = None, dropout_p: float = 0.0, seed: Optional[int] = None,
                    scale: Optional[float] = None, return_lse: bool = False, backend: str = "auto"):
    """Fused causal attention with a learned mixture of exponential decays.

    Args:
        q: ``(B, H, Tq, D)``; k: ``(B, H, Tk, D)``; v: ``(B, H, Tk, Dv)``, with ``Tq <= Tk``;
            query ``i`` sits at position ``i + Tk - Tq``.
        log_gamma: ``(H, S)`` float ``<= 0``, log decay rate of each of ``S`` scales; differentiable.
        alpha_logits: ``(H, S)`` float, mixing logits (softmax over ``S``); differentiable.
        times: optional ``(B, Tk)`` non-decreasing timestamps; the distance becomes
            ``times[b, p_i] - times[b, j]``. No gradient.
        eps: floor inside the log, ``m = log(sum_s a_s gamma_s^Delta + eps)``; ``0`` allowed.
        window: optional int ``W``: also drop keys more than ``W`` positions back (O(T*W) compute).
        key_padding_mask, key_valid_mask, key_bias, dropout_p, seed, scale, return_lse, backend:
            as :func:`tempattn.masked_sdpa`.

    Returns:
        ``out (B, H, Tq, Dv)``; with ``return_lse`` also ``lse (B, H, Tq)`` (``-inf`` for empty rows).
    """
    op = "decay_attention"
    V.check_window(op, window)
    _check_eps(op, eps)
    a = common_args(op, q, k, v, causal=True, key_padding_mask=key_padding_mask, key_valid_mask=key_valid_mask,
                    key_bias=key_bias, dropout_p=dropout_p, seed=seed, scale=scale, backend=backend)
    log_gamma, alpha_logits = _decay_params(op, log_gamma, alpha_logits, q, a)
    times = _relative_times(op, times, q.shape[0], k.shape[2], q, a.backend)
    # A window of Tk keys or more admits every causal key: the same as none, and no overflow in a kernel.
    window = None if window is not None and window >= k.shape[2] else window
    out, lse = DECAY_ATTENTION(q, k, v, log_gamma, alpha_logits, times, a.key_valid,
                               a.key_bias, window, float(eps), a.dropout_p, a.seed, a.scale, a.backend)
    return (out, lse) if return_lse else out
