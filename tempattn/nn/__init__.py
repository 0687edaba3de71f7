"""Drop-in attention layers on the fused operators.

- :class:`MultiheadAttention`: drop-in for ``torch.nn.MultiheadAttention`` (``masked_sdpa``).
- :class:`CausalSelfAttention`: causal self-attention with a key/value cache for decoding
  (``masked_sdpa``, dropout on the probabilities).
- :class:`RelativeTemporalAttention`: causal, windowed relative-position bias and an optional
  response-category key bias (``relpos_attention``).
- :class:`MultiScaleDecayAttention`: causal, learned mixture of exponential decays (``decay_attention``).
- :class:`TimeEncoding` (Time2Vec), :class:`CompositeTimeEncoding` (calendar features),
  :class:`TemporalContext` (depthwise causal convolution with a residual).
- :class:`KVCache`: the key/value cache for incremental decoding of the causal layers.
"""
from .cache import KVCache
from .context import TemporalContext
from .multihead import MultiheadAttention
from .temporal import (CausalSelfAttention, DecayStats, MultiScaleDecayAttention,
                       RelativeTemporalAttention)
from .time_encoding import CALENDAR_FIELDS, CompositeTimeEncoding, TimeEncoding, calendar_fields

__all__ = ["MultiheadAttention", "CausalSelfAttention", "RelativeTemporalAttention", "MultiScaleDecayAttention",
           "DecayStats", "KVCache", "TimeEncoding", "CompositeTimeEncoding", "TemporalContext", "CALENDAR_FIELDS",
           "calendar_fields"]
