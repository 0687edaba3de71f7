"""The MIGT-TVDT forecaster: gated RevIN, per-variable tokens, temporal + cross-variable attention, quantile heads.

Shapes: ``B`` batch, ``T`` context steps, ``V`` variables, ``d`` model width, ``H`` horizons,
``Q`` quantile levels. Padding follows the ``key_padding_mask`` convention of
:class:`tempattn.nn.MultiheadAttention`: ``(B, T)`` bool, **True = padding, ignored**.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...nn import CompositeTimeEncoding, MultiheadAttention
from ...nn._heads import check_key_padding_mask, check_positive_int, describe, fail
from ...ops.common.validation import value_checks_enabled

__all__ = ["MIGTTVDT", "GatedRevIN", "VariableEmbedding", "TemporalCrossBlock", "NonCrossingQuantileHead",
           "last_valid_index", "check_quantiles"]

_MODEL = "MIGTTVDT"


def check_quantiles(quantiles) -> Tuple[float, ...]:
    """The quantile levels as a tuple, checked to be strictly increasing inside ``(0, 1)``."""
    hint = "pass increasing levels such as (0.1, 0.5, 0.9)"
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence) or not quantiles:
        fail(_MODEL, "quantiles", "a non-empty sequence of floats", describe(quantiles), hint, TypeError)
    levels = tuple(float(q) for q in quantiles)
    if not all(0.0 < q < 1.0 for q in levels) or any(a >= b for a, b in zip(levels, levels[1:])):
        fail(_MODEL, "quantiles", "strictly increasing levels in (0, 1)", levels, hint)
    return levels


def last_valid_index(key_padding_mask: Tensor) -> Tensor:
    """``(B, T)`` bool (True = padding) -> ``(B,)`` int64 index of each row's last non-padded step."""
    steps = torch.arange(key_padding_mask.shape[1], device=key_padding_mask.device)
    return torch.where(key_padding_mask, -1, steps).amax(dim=1)


class GatedRevIN(nn.Module):
    """Reversible instance normalisation with masked statistics and a learned per-variable gate.

    Over the non-padded steps of each window: ``mean, std = sqrt(var + eps)`` per variable
    (padded steps never enter). With the gate ``g = sigmoid(gate_logit) (V,)``:
    ``loc = g * mean``, ``scale = g * std + (1 - g)`` — ``g = 1`` is RevIN, ``g = 0`` leaves the
    series as it is. Normalised values are ``(x - loc) / scale`` (0 at padded steps); outputs are
    mapped back with ``y * scale + loc``. ``scale > 0``, so the inversion keeps the order of quantiles.
    """

    def __init__(self, n_vars: int, *, eps: float = 1e-5, gate_init: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.gate_logit = nn.Parameter(torch.full((n_vars,), gate_init))

    def forward(self, x: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """x ``(B, T, V)``, valid ``(B, T)`` bool -> normalised ``(B, T, V)``, loc and scale ``(B, 1, V)``."""
        observed = valid.unsqueeze(-1)
        x = torch.where(observed, x, 0.0)  # padded values (possibly NaN) never enter any sum
        count = valid.sum(dim=1).clamp_min(1).view(-1, 1, 1).to(x.dtype)
        mean = x.sum(dim=1, keepdim=True) / count
        var = torch.where(observed, (x - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / count
        gate = torch.sigmoid(self.gate_logit)
        loc = gate * mean
        scale = gate * torch.sqrt(var + self.eps) + (1 - gate)
        return torch.where(observed, (x - loc) / scale, 0.0), loc, scale

    @staticmethod
    def invert(y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """y ``(B, H, V, Q)`` in normalised units -> data units, with loc, scale ``(B, 1, V)``."""
        return y * scale.unsqueeze(-1) + loc.unsqueeze(-1)


class VariableEmbedding(nn.Module):
    """Each variable's scalar series to tokens: ``(B, T, V) -> (B, T, V, d)``, ``x_v w_v + b_v + e_v``.

    ``w_v, b_v (d,)`` are the variable's own value projection, ``e_v`` its learned embedding.
    """

    def __init__(self, n_vars: int, d_model: int) -> None:
        super().__init__()
        self.value_weight = nn.Parameter(torch.randn(n_vars, d_model))
        self.value_bias = nn.Parameter(torch.zeros(n_vars, d_model))
        self.variable = nn.Embedding(n_vars, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-1) * self.value_weight + self.value_bias + self.variable.weight


class TemporalCrossBlock(nn.Module):
    """Pre-norm block on tokens ``(B, T, V, d)``: causal attention over time per variable, then
    attention across the ``V`` variables at each step, then a feed-forward layer; each residual.

    Temporal attention runs on ``(B*V, T, d)`` with the window's ``key_padding_mask`` repeated for
    every variable (fused ``masked_sdpa`` call, ``causal=True``); cross-variable attention on
    ``(B*T, V, d)`` mixes only tokens of the same step, so no step sees a later one.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(d_model)
        self.temporal = MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True, backend=backend)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross = MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True, backend=backend)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model),
                                nn.Dropout(dropout))

    def forward(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """tokens ``(B, T, V, d)``, key_padding_mask ``(B, T)`` bool (True = padding) -> ``(B, T, V, d)``."""
        B, T, V, d = tokens.shape
        series = tokens.transpose(1, 2).reshape(B * V, T, d)
        normed = self.temporal_norm(series)
        series = series + self.temporal(normed, normed, normed, key_padding_mask=key_padding_mask.repeat_interleave(
            V, dim=0), need_weights=False, is_causal=True)[0]
        steps = series.reshape(B, V, T, d).transpose(1, 2).reshape(B * T, V, d)
        normed = self.cross_norm(steps)
        steps = steps + self.cross(normed, normed, normed, need_weights=False)[0]
        steps = steps + self.ff(self.ff_norm(steps))
        return steps.reshape(B, T, V, d)


class NonCrossingQuantileHead(nn.Module):
    """Tokens ``(..., d)`` -> quantiles ``(..., H, Q)``, non-decreasing in the level by construction.

    A linear layer gives ``H * Q`` raw values ``r``; ``q_0 = r_0`` and
    ``q_k = q_0 + sum_{i=1..k} softplus(r_i)``. The bias starts at the standard normal quantiles
    (the targets are roughly standardised by the RevIN).
    """

    def __init__(self, d_model: int, horizon: int, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.horizon, self.n_quantiles = horizon, len(quantiles)
        self.proj = nn.Linear(d_model, horizon * len(quantiles))
        z = torch.special.ndtri(torch.tensor(quantiles, dtype=torch.float64))
        gaps = z.diff()
        initial = torch.cat([z[:1], gaps + torch.log(-torch.expm1(-gaps))])  # inverse softplus of the gaps
        with torch.no_grad():
            self.proj.bias.copy_(initial.float().repeat(horizon))

    def forward(self, h: Tensor) -> Tensor:
        raw = self.proj(h).unflatten(-1, (self.horizon, self.n_quantiles))
        lowest = raw[..., :1]
        return torch.cat([lowest, lowest + F.softplus(raw[..., 1:]).cumsum(dim=-1)], dim=-1)


def _check_observed(x: Tensor, key_padding_mask: Tensor) -> None:
    """Every row has an observed step, and every observed step is finite (reads the data)."""
    if bool(key_padding_mask.all(dim=1).any()):
        fail(_MODEL, "key_padding_mask", "False (observed) at one step or more in every row",
             f"{int(key_padding_mask.all(dim=1).sum())} fully padded row(s)",
             "drop windows without any observation; there is nothing to forecast from")
    if not bool(torch.isfinite(x).all(dim=-1).logical_or(key_padding_mask).all()):
        fail(_MODEL, "x", "finite at every non-padded step", "NaN or inf at an observed step",
             "mark missing steps True in key_padding_mask")


class MIGTTVDT(nn.Module):
    """Multivariate quantile forecaster with temporal and cross-variable attention.

    Args:
        n_vars: number of variables ``V``. horizon: ``H`` steps forecast after the origin.
        quantiles: ``Q`` strictly increasing levels in ``(0, 1)``.
        d_model, n_heads, n_layers: width, heads per attention layer, number of blocks.
        dropout: attention and feed-forward dropout. backend: ``tempattn`` backend for every attention.

    ``forward(x, timestamps, key_padding_mask=None)``:
        x ``(B, T, V)`` float context values (anything, even NaN, at padded steps);
        timestamps ``(B, T)`` int64 epoch seconds, UTC (encoded by ``CompositeTimeEncoding``);
        key_padding_mask ``(B, T)`` bool, True = padding (ignored), None = no padding.
        Returns ``(B, H, V, Q)`` quantiles of steps ``o + 1 .. o + H`` where ``o`` is each row's
        last non-padded step (the origin), non-decreasing along ``Q``.

    Only the origin token is read out, and it sees non-padded steps up to ``o`` (causal temporal
    attention, same-step cross attention, masked RevIN statistics): the forecast does not depend on
    padded steps or on anything after ``o``.
    """

    def __init__(self, n_vars: int = 4, horizon: int = 5,
                 quantiles: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95),
                 d_model: int = 32, n_heads: int = 4, n_layers: int = 2, dropout: float = 0.0,
                 backend: str = "auto") -> None:
        super().__init__()
        for name, value, hint in (("n_vars", n_vars, "the number of series V in x (B, T, V)"),
                                  ("horizon", horizon, "forecast at least one step ahead"),
                                  ("n_layers", n_layers, "use n_layers=1 for a single block")):
            check_positive_int(_MODEL, name, value, hint)
        self.n_vars, self.horizon = n_vars, horizon
        self.quantiles = check_quantiles(quantiles)
        self.revin = GatedRevIN(n_vars)
        self.embed = VariableEmbedding(n_vars, d_model)
        self.time = CompositeTimeEncoding(d_model)
        self.blocks = nn.ModuleList(TemporalCrossBlock(d_model, n_heads, dropout, backend) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = NonCrossingQuantileHead(d_model, horizon, self.quantiles)

    def get_attention_weights(self, *inputs, **kwargs) -> Dict[str, Tensor]:
        """Per-head attention weights ``(B, H, Tq, Tk)`` of every attention layer on the forward inputs
        (``x, timestamps, key_padding_mask``), from the dense reference path, keyed by layer name (for monitoring; see
        :func:`tempattn.models.common.attention.get_attention_weights`)."""
        from ..common.attention import get_attention_weights
        return get_attention_weights(self, *inputs, **kwargs)

    def forward(self, x: Tensor, timestamps: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        key_padding_mask = self._checked_inputs(x, timestamps, key_padding_mask)
        valid = ~key_padding_mask
        normed, loc, scale = self.revin(x, valid)
        tokens = self.embed(normed) + self.time(timestamps).unsqueeze(2)
        tokens = torch.where(valid[..., None, None], tokens, 0.0)  # (B, T, V, d); padded tokens are inert zeros
        for block in self.blocks:
            tokens = block(tokens, key_padding_mask)
        origin = tokens[torch.arange(x.shape[0], device=x.device), last_valid_index(key_padding_mask)]  # (B, V, d)
        quantiles = self.head(self.final_norm(origin)).transpose(1, 2)  # (B, H, V, Q)
        return self.revin.invert(quantiles, loc, scale)

    def _checked_inputs(self, x, timestamps, key_padding_mask) -> Tensor:
        """Check the inputs; return the padding mask ``(B, T)`` (all False when None)."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 3 or x.shape[-1] != self.n_vars:
            fail(_MODEL, "x", f"a float tensor (B, T, V={self.n_vars})", describe(x),
                 "stack the context values batch-first, one column per variable", TypeError)
        B, T, _ = x.shape
        if not isinstance(timestamps, Tensor) or timestamps.dtype == torch.bool or tuple(timestamps.shape) != (B, T):
            fail(_MODEL, "timestamps", f"an int64 tensor (B, T) = {(B, T)} of epoch seconds", describe(timestamps),
                 "one UTC timestamp per step, e.g. torch.tensor(seconds, dtype=torch.int64)", TypeError)
        check_key_padding_mask(_MODEL, key_padding_mask, B, T)
        if key_padding_mask is None:
            key_padding_mask = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if value_checks_enabled(x):
            _check_observed(x, key_padding_mask)
        return key_padding_mask
