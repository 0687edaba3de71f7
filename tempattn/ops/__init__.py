"""The three fused operators: one folder each (maths, reference, launcher, op), shared code in common/."""
from .decay_attention import decay_attention
from .masked_sdpa import masked_sdpa
from .relpos_attention import relpos_attention

__all__ = ["masked_sdpa", "relpos_attention", "decay_attention"]
