"""MIGT-TVDT: multivariate quantile forecasting with temporal and cross-variable attention (docs/models.md).

Input: a context window of ``V`` variables, ``x (B, T, V)``, its timestamps ``(B, T)`` (int64
epoch seconds, real calendar dates with gaps) and ``key_padding_mask (B, T)`` bool —
**True = padding, ignored** (the ``nn.MultiheadAttention`` convention, passed by that name to
:class:`tempattn.nn.MultiheadAttention` and so to ``tempattn.masked_sdpa``). Output: quantiles
``(B, H, V, Q)`` of the ``H`` steps after each row's last non-padded step (the *origin*).

Architecture:

1. Gated RevIN: per window and variable, ``mean`` and ``std`` over the non-padded steps only;
   a learned gate ``g = sigmoid(gate_logit) (V,)`` interpolates between instance normalisation
   and identity (``loc = g mean``, ``scale = g std + 1 - g``). The forecasts are mapped back
   with ``q scale + loc``; ``scale > 0`` keeps the quantiles ordered.
2. Per-variable tokens ``(B, T, V, d)``: ``x_v w_v + b_v + e_v`` (own value projection and a
   variable embedding) plus ``CompositeTimeEncoding`` of the timestamps (time of day, day of
   week, day of month, day of year via ``calendar_fields``); padded tokens are zeroed.
3. ``n_layers`` blocks: causal temporal self-attention per variable (``(B*V, T, d)``, fused
   ``masked_sdpa`` with ``causal=True`` and the padding mask), attention across the variables at
   each step (``(B*T, V, d)``), feed-forward; pre-norm residuals.
4. Non-crossing quantile heads on the origin token: ``q_0 = r_0``,
   ``q_k = q_0 + sum_{i<=k} softplus(r_i)`` for each horizon and variable, so ``q`` is
   non-decreasing in the level by construction (crossing rate exactly 0, also after the RevIN
   inversion, whose affine map with positive scale is monotone in floating point too).

Leak-free: the forecast reads only the origin token. Temporal attention is causal and masks
padding, cross-variable attention mixes tokens of one step, and the RevIN statistics skip padded
steps, so the forecast depends on no padded step and on nothing after the origin. Training
windows (``data.make_windows``) hold only steps up to the origin; targets come separately and
the train/val/test blocks are contiguous so no evaluation target is a training target.

Metrics (``train``): pinball loss, coverage of the outer interval, per-level calibration,
crossing rate; baselines: naive (last value + empirical change quantiles), climatology, and on
synthetic data the true conditional quantiles of a seasonal VAR(1) (``data.SeasonalVAR``).
Data: ``"sp500_nasdaq"`` (arch wheel, daily 1999–2018) and ``"synthetic"``.
"""
from torch import nn

from .model import MIGTTVDT

__all__ = ["MIGTTVDT", "build_migt_tvdt"]


def build_migt_tvdt(**kw) -> nn.Module:
    """:class:`MIGTTVDT` with its keyword arguments (defaults: 4 variables, 5 horizons x 7 quantile levels
    0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, d_model 32)."""
    return MIGTTVDT(**kw)
