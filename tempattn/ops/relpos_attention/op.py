"""relpos_attention as a torch.library custom op (fake + autograd) and its public function."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..common import validation as V
from ..common.arguments import as_param, common_args
from ..common.autograd import fake_gradients, fake_outputs, register_attention_autograd
from . import launcher
from .reference import relpos_attention_reference


@torch.library.custom_op("tempattn::relpos_attention_fwd", mutates_args=())
def relpos_attention_fwd(q: Tensor, k: Tensor, v: Tensor, rel_bias: Tensor, key_valid: Optional[Tensor],
                         key_bias: Optional[Tensor], window: int, dropout_p: float, seed: int, scale: float,
                         backend: str) -> Tuple[Tensor, Tensor]:
    return launcher.forward(backend, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale)


@relpos_attention_fwd.register_fake
def _(q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale, backend):
    return fake_outputs(q, v)


@torch.library.custom_op("tempattn::relpos_attention_bwd", mutates_args=())
def relpos_attention_bwd(grad_out: Tensor, grad_lse: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor,
                         v: Tensor, rel_bias: Tensor, key_valid: Optional[Tensor], key_bias: Optional[Tensor],
                         window: int, dropout_p: float, seed: int, scale: float, backend: str) -> List[Tensor]:
    return launcher.backward(backend, grad_out, grad_lse, out, lse, q, k, v, rel_bias, key_valid, key_bias,
                             window, dropout_p, seed, scale)


@relpos_attention_bwd.register_fake
def _(grad_out, grad_lse, out, lse, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale, backend):
    return fake_gradients((q, k, v, rel_bias, key_valid, key_bias), launcher.DIFFERENTIABLE)


register_attention_autograd(relpos_attention_fwd, relpos_attention_bwd, launcher.DIFFERENTIABLE,
                            relpos_attention_reference)


def _check_rel_bias(op: str, rel_bias, H: int, window, device) -> None:
    if window is None:
        V.check_tensor(op, "rel_bias", rel_bias, 2, "(H, R)")
        V.check_param(op, "rel_bias", rel_bias, (H, max(rel_bias.shape[1], 1)), "(H, R) with R >= 1", device)
    else:
        V.check_param(op, "rel_bias", rel_bias, (H, window + 1), "(H, window + 1)", device)
    V.check_finite(op, "rel_bias", rel_bias)


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
        key_padding_mask / key_valid_mask / key_bias / dropout_p / seed / scale / return_lse / backend:
            as :func:`tempattn.masked_sdpa` (``key_bias`` is ``(B, Tk)`` or ``(B, H, Tk)``).

    Returns:
        ``out (B, H, Tq, Dv)``; with ``return_lse`` also ``lse (B, H, Tq)`` (``-inf`` for empty rows).
    """
    op = "relpos_attention"
    V.check_window(op, window)
    a = common_args(op, q, k, v, causal=True, key_padding_mask=key_padding_mask, key_valid_mask=key_valid_mask,
                    key_bias=key_bias, dropout_p=dropout_p, seed=seed, scale=scale, backend=backend)
    _check_rel_bias(op, rel_bias, q.shape[1], window, q.device)
    out, lse = relpos_attention_fwd(q, k, v, as_param(rel_bias, q), a.key_valid, a.key_bias,
                                    -1 if window is None else window, a.dropout_p, a.seed, a.scale, a.backend)
    return (out, lse) if return_lse else out
