"""masked_sdpa as a torch.library custom op (fake + autograd) and its public function."""
from typing import Optional

from torch import Tensor

from ..common.arguments import common_args
from ..common.declaration import AttentionOp, ConfigArg, declare_attention_op
from . import launcher
from .reference import masked_sdpa_reference


MASKED_SDPA = declare_attention_op(AttentionOp(
    name="masked_sdpa",
    op_tensors=(),
    op_config=(ConfigArg("causal", "bool"),),
    reference=masked_sdpa_reference,
    triton=launcher.TRITON,
))


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, *, key_padding_mask: Optional[Tensor] = None,
                key_valid_mask: Optional[Tensor] = None, key_bias: Optional[Tensor] = None, causal: bool = False,
                dropout_p: float = 0.0, seed: Optional[int] = None, scale: Optional[float] = None,
                return_lse: bool = False, backend: str = "auto"):
    """Fused scaled dot-product attention with named padding masks.

    Args:
        q: ``(B, H, Tq, D)`` queries; k: ``(B, H, Tk, D)`` keys; v: ``(B, H, Tk, Dv)`` values.
            float16, bfloat16, float32 (float64 on the cpu/reference backends); last dim
            contiguous; ``D, Dv <= 256``.
        key_padding_mask: ``(B, Tk)`` bool, **True = padding, ignored** (nn.MultiheadAttention).
        key_valid_mask: ``(B, Tk)`` bool, **True = real token, attended** (SDPA). Not both.
        key_bias: ``(B, Tk)`` or ``(B, H, Tk)`` float added to every score of key ``j``; differentiable.
        causal: attend to keys with ``j <= i + Tk - Tq`` only (bottom-right aligned); needs ``Tq <= Tk``.
        dropout_p: dropout on the normalised probabilities, in ``[0, 1)``; kept values scaled by ``1/(1-p)``.
        seed: Philox seed of the keep mask (``tempattn.testing.dropout_keep_mask``); None draws one
            from torch's default generator.
        scale: score scale, default ``1/sqrt(D)``.
        return_lse: also return the row log-sum-exp.
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        ``out (B, H, Tq, Dv)`` in q's dtype; with ``return_lse`` also ``lse (B, H, Tq)`` float32
        (float64 for float64 inputs), ``-inf`` for a row with no admissible key (whose output is 0).
    """
    op = "masked_sdpa"
    if not isinstance(causal, bool):
        raise TypeError(f"{op}: `causal` must be a bool, got {type(causal).__name__}; hint: pass causal=True or False")
    a = common_args(op, q, k, v, causal=causal, key_padding_mask=key_padding_mask, key_valid_mask=key_valid_mask,
                    key_bias=key_bias, dropout_p=dropout_p, seed=seed, scale=scale, backend=backend)
    out, lse = MASKED_SDPA(q, k, v, a.key_valid, a.key_bias, causal, a.dropout_p, a.seed, a.scale, a.backend)
    return (out, lse) if return_lse else out
