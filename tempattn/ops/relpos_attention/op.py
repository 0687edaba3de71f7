"""relpos_attention as a torch.library custom op (fake + autograd) and its public function."""
from typing import Optional

from torch import Tensor

from ..common import validation as V
from ..common.arguments import CommonArgs, as_param, common_args
from ..common.declaration import AttentionOp, ConfigArg, TensorArg, declare_attention_op
from . import launcher
from .reference import relpos_attention_reference


RELPOS_ATTENTION = declare_attention_op(AttentionOp(
    name="relpos_attention",
    op_tensors=(TensorArg("rel_bias"),),
    op_config=(ConfigArg("window", "SymInt?"),),
    reference=relpos_attention_reference,
    triton=launcher.TRITON,
))


def _rel_bias(op: str, rel_bias, q, window, a: CommonArgs):
    """Checked ``rel_bias``, as the kernels take it."""
    H = q.shape[1]
    if a.checks.param_width(rel_bias, q, H, -1 if window is None else window + 1) < 0:  # not kernel-ready
        _check_rel_bias_shape(op, rel_bias, H, window, q.device)
        rel_bias = as_param(rel_bias, q)
    if V.python_value_checks(rel_bias, a.backend):
        V.check_finite(op, "rel_bias", rel_bias)
    return rel_bias


def _check_rel_bias_shape(op: str, rel_bias, H: int, window, device) -> None:
    if window is None:
        V.check_tensor(op, "rel_bias", rel_bias, 2, "(H, R)")
        V.check_param(op, "rel_bias", rel_bias, (H, max(rel_bias.shape[1], 1)), "(H, R) with R >= 1", device)
    else:
        V.check_param(op, "rel_bias", rel_bias, (H, window + 1), "(H, window + 1)", device)


def relpos_attention(q: Tensor, k: Tensor, v: Tensor, rel_bias: Tensor, *, window: Optional[int],
                     key_padding_mask: Optional[Tensor] = None, key_valid_mask: Optional[Tensor] = None,
                     key_bias: Optional[Tensor] = None, dropout_p: float = 0.0, seed: Optional[int] = None,
                     scale: Optional[float] = None, return_lse: bool = False, backend: str = "auto"):
    """Fused causal attention with a learned relative-position bias.

    Args:
        q: ``(B, H, Tq, D)``; k: ``(B, H, Tk, D)``; v: ``(B, H, Tk, Dv)``, with ``Tq <= Tk``;
            query ``i`` sits at position ``i + Tk - Tq``.
        rel_bias: ``(H, R)`` float, differentiable; ``rel_bias[h, d]`` is added to the score of a key
            ``d`` steps back.
        window: required keyword. An int ``W >= 0``: attend to the ``W + 1`` most recent positions,
            ``R == W + 1``, O(T*W) compute. ``None``: full causal attention, distances ``>= R - 1``
            share ``rel_bias[:, R - 1]``.
        key_padding_mask, key_valid_mask, key_bias, dropout_p, seed, scale, return_lse, backend:
            as :func:`tempattn.masked_sdpa` (``key_bias`` is ``(B, Tk)`` or ``(B, H, Tk)``).

    Returns:
        ``out (B, H, Tq, Dv)``; with ``return_lse`` also ``lse (B, H, Tq)`` (``-inf`` for empty rows).
    """
    op = "relpos_attention"
    V.check_window(op, window)
    a = common_args(op, q, k, v, causal=True, key_padding_mask=key_padding_mask, key_valid_mask=key_valid_mask,
                    key_bias=key_bias, dropout_p=dropout_p, seed=seed, scale=scale, backend=backend)
    rel_bias = _rel_bias(op, rel_bias, q, window, a)
    out, lse = RELPOS_ATTENTION(q, k, v, rel_bias, a.key_valid, a.key_bias, window, a.dropout_p,
                                a.seed, a.scale, a.backend)
    return (out, lse) if return_lse else out
