"""The fraud classifier on event sequences (``tsa``) and its two-sequence gated variant (``tsa_gated``).

Shapes: ``B`` rows (one target event each), ``T`` events per sequence (right-padded), ``C``
categorical and ``F`` numeric features per event, ``d`` = ``d_model``, ``E`` experts.
"""
import dataclasses
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...nn import MultiheadAttention, TimeEncoding
from ...nn import _heads
from ...ops.common.validation import value_checks_enabled
from .data import EventSequences

__all__ = ["TSA", "TSAGated", "OrderAttention", "FeatureAttention", "MixtureOfExperts", "SequenceGate",
           "PreparedEvents", "prepare_events", "engineered_features", "ENGINEERED_FEATURES"]

ENGINEERED_FEATURES = ("amount_zscore", "log1p_days_since_previous", "log1p_count_in_window", "log1p_history_length")
_STD_FLOOR = 0.1  # log-amount units: a constant history must not turn the z-score into 1/0


@dataclasses.dataclass(frozen=True)
class PreparedEvents:
    """Sequences with padded entries zeroed (so nothing downstream can read them) and the target event.

    categorical ``(B, T, C)``, numeric ``(B, T, F)``, times ``(B, T)`` (padding zeroed);
    ages ``(B, T)`` float32 ``>= 0``: days from each event to the reference time;
    padding_mask ``(B, T)`` bool (True = padding); last ``(B,)`` int64 index of the last real
    event (0 when there is none); has_events ``(B,)`` bool.
    """
    categorical: Tensor
    numeric: Tensor
    times: Tensor
    ages: Tensor
    padding_mask: Tensor
    last: Tensor
    has_events: Tensor

    def last_event(self) -> Tuple[Tensor, Tensor, Tensor]:
        """categorical ``(B, C)``, numeric ``(B, F)``, time ``(B,)`` of the last real event (zeros if none)."""
        rows = torch.arange(self.last.shape[0], device=self.last.device)
        return self.categorical[rows, self.last], self.numeric[rows, self.last], self.times[rows, self.last]


def _check_events(model: str, name: str, events, cardinalities: Sequence[int], n_numeric: int) -> None:
    """O(1) checks of ``events``: its type and the feature counts (the values: :func:`_check_values`)."""
    if not isinstance(events, EventSequences):
        _heads.fail(model, name, "an EventSequences", type(events).__name__,
                    "build it with tempattn.models.tsa.data.pad_histories", TypeError)
    if events.categorical.shape[-1] != len(cardinalities):
        _heads.fail(model, f"{name}.categorical", f"(B, T, {len(cardinalities)}) for cardinalities={cardinalities}",
                    tuple(events.categorical.shape), "build the model with the dataset's FeatureSpec.model_kwargs()")
    if events.numeric.shape[-1] != n_numeric:
        _heads.fail(model, f"{name}.numeric", f"(B, T, {n_numeric}) for n_numeric={n_numeric}",
                    tuple(events.numeric.shape), "build the model with the dataset's FeatureSpec.model_kwargs()")


def _check_values(model: str, name: str, categorical: Tensor, ages: Tensor, cardinalities: Sequence[int]) -> None:
    """The data-reading checks, one reduction each over the padding-zeroed ``categorical (B, T, C)`` and
    ``ages (B, T)`` (policy: CPU always, GPU under TEMPATTN_DEBUG=1, never while compiling)."""
    if not value_checks_enabled(categorical) or ages.numel() == 0:
        return
    low, high = categorical.reshape(-1, len(cardinalities)).aminmax(dim=0)  # per field
    if min(low.tolist()) < 0 or any(h >= n for h, n in zip(high.tolist(), cardinalities)):
        _heads.fail(model, f"{name}.categorical", f"ids in [0, cardinality) per field, cardinalities={cardinalities}",
                    "an out-of-range id on a real event", "raise the cardinality or remap the ids")
    if bool((ages < 0).any()):
        _heads.fail(model, f"{name}.times", "non-decreasing, with no real event after the target event",
                    "an event later than the target", "sort each history by time; a peer sequence may only hold "
                    "events up to the target's time (anything later leaks the future)")


def prepare_events(events: EventSequences, cardinalities: Sequence[int], n_numeric: int, *,
                   reference_time: Optional[Tensor] = None, name: str = "events", model: str = "TSA"
                   ) -> PreparedEvents:
    """Zero the padding and compute ages to ``reference_time`` ``(B,)``.

    The reference defaults to each row's last real event; non-finite entries of
    ``reference_time`` (a row whose target does not exist) fall back to it too. Raises
    ValueError when a real event lies after the reference time (unsorted times, or a peer
    event from the future of the target: a leak).
    """
    _check_events(model, name, events, cardinalities, n_numeric)
    padding = events.padding_mask
    positions = torch.arange(padding.shape[1], device=padding.device)
    last = torch.where(padding, -1, positions).amax(dim=1)
    has_events = last >= 0
    last = last.clamp(min=0)
    times = events.times.masked_fill(padding, 0)
    reference = times.gather(1, last[:, None]).squeeze(1)
    if reference_time is not None:
        reference_time = reference_time.to(times.dtype)
        reference = torch.where(torch.isfinite(reference_time), reference_time, reference)
    ages = (reference[:, None] - times).masked_fill(padding, 0)
    categorical = events.categorical.masked_fill(padding[..., None], 0)
    _check_values(model, name, categorical, ages, cardinalities)
    return PreparedEvents(categorical=categorical, numeric=events.numeric.masked_fill(padding[..., None], 0),
                          times=times, ages=ages.float(), padding_mask=padding, last=last, has_events=has_events)


def engineered_features(prepared: PreparedEvents, amount_feature: int, window_days: float,
                        last_event: Optional[Tuple[Tensor, Tensor, Tensor]] = None) -> Tensor:
    """The engineered features of the last event, ``(B, 4)`` in the order of ``ENGINEERED_FEATURES``.

    Over the earlier real events of the window (``n`` of them, amounts ``a_j``, times ``t_j``)
    and the last event (``a``, ``t``): ``asinh((a - mean a_j) / max(std a_j, 0.1))``,
    ``log1p(t - max t_j)``, ``log1p(#{j : t - t_j <= window_days})``, ``log1p(n)``; each 0
    when ``n = 0``. Padded entries are excluded with ``where`` (not multiplied by zero).
    ``last_event``: ``prepared.last_event()``, when the caller has it already.
    """
    _, last_numeric, last_time = prepared.last_event() if last_event is None else last_event
    positions = torch.arange(prepared.padding_mask.shape[1], device=prepared.last.device)
    earlier = ~prepared.padding_mask & (positions < prepared.last[:, None])
    count = earlier.sum(dim=1)
    has_earlier = count > 0
    denominator = count.clamp(min=1).to(prepared.numeric.dtype)
    amount = prepared.numeric[..., amount_feature]
    mean = torch.where(earlier, amount, 0).sum(dim=1) / denominator
    variance = torch.where(earlier, (amount - mean[:, None]) ** 2, 0).sum(dim=1) / denominator
    zscore = torch.asinh((last_numeric[:, amount_feature] - mean) / variance.clamp(min=_STD_FLOOR ** 2).sqrt())
    previous_time = torch.where(earlier, prepared.times, float("-inf")).amax(dim=1)
    since_previous = torch.log1p(torch.where(has_earlier, last_time - previous_time, 0))
    in_window = earlier & (last_time[:, None] - prepared.times <= window_days)
    features = torch.stack([torch.where(has_earlier, zscore, 0), since_previous.to(zscore.dtype),
                            torch.log1p(in_window.sum(dim=1).to(zscore.dtype)), torch.log1p(count.to(zscore.dtype))],
                           dim=1)
    return features.float()


class CategoricalEmbedding(nn.Module):
    """One embedding table per categorical field: ``(..., C)`` int64 -> ``(..., C, d)``."""

    def __init__(self, cardinalities: Sequence[int], d_model: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, d_model) for n in cardinalities)

    def forward(self, categorical: Tensor) -> Tensor:
        return torch.stack([table(categorical[..., c]) for c, table in enumerate(self.tables)], dim=-2)


class NumericTokens(nn.Module):
    """One token per numeric feature, ``x_f * w_f + b_f``: ``(..., F)`` -> ``(..., F, d)``."""

    def __init__(self, n_features: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_features, d_model) / d_model ** 0.5)
        self.bias = nn.Parameter(torch.zeros(n_features, d_model))

    def forward(self, values: Tensor) -> Tensor:
        return values.float()[..., None] * self.weight + self.bias


class OrderAttention(nn.Module):
    """A learnable summary token attends over the events of one sequence.

    Event tokens ``x_j = Σ_c emb_c(cat_jc) + W num_j`` ``(B, T, d)``; keys and values are
    ``x_j + P · Time2Vec(log1p(age_j))`` (the time encoding is on keys and values, not on the
    query); the query is the summary token ``s (d,)``. One fused ``masked_sdpa`` call
    (:class:`tempattn.nn.MultiheadAttention` with ``key_padding_mask``) gives ``(B, 1, d)``;
    the output is ``LayerNorm(s + attention) (B, d)``. A sequence with no real event attends to
    nothing: the attention is zero, not NaN.
    """

    def __init__(self, cardinalities: Sequence[int], n_numeric: int, d_model: int, n_heads: int, time_dim: int,
                 dropout: float, backend: str) -> None:
        super().__init__()
        self.categorical = CategoricalEmbedding(cardinalities, d_model)
        self.numeric = nn.Linear(n_numeric, d_model)
        self.time_encoding = TimeEncoding(time_dim)
        self.time_projection = nn.Linear(time_dim, d_model)
        self.summary = nn.Parameter(torch.randn(d_model) * 0.02)
        self.attention = MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True, backend=backend)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, prepared: PreparedEvents) -> Tensor:
        """prepared: from :func:`prepare_events`. Returns the sequence summary ``(B, d)``."""
        tokens = self.categorical(prepared.categorical).sum(dim=-2) + self.numeric(prepared.numeric.float())
        keys = tokens + self.time_projection(self.time_encoding(torch.log1p(prepared.ages)))
        query = self.summary.expand(tokens.shape[0], 1, -1)
        summary, _ = self.attention(query, keys, keys, key_padding_mask=prepared.padding_mask, need_weights=False)
        return self.norm(self.summary + summary.squeeze(1))


class FeatureAttention(nn.Module):
    """Self-attention over the feature tokens of the last event and the engineered features.

    Tokens ``(B, 1 + C + F + 4, d)``: a learnable CLS token, one token per categorical field
    (own embedding tables), one per numeric feature and one per engineered feature
    (:func:`engineered_features`). One pre-norm self-attention block (fused ``masked_sdpa``,
    no mask: every token is real); the output is ``LayerNorm(CLS) (B, d)``.
    """

    def __init__(self, cardinalities: Sequence[int], n_numeric: int, amount_feature: int, window_days: float,
                 d_model: int, n_heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.amount_feature = amount_feature
        self.window_days = window_days
        self.categorical = CategoricalEmbedding(cardinalities, d_model)
        self.numeric = NumericTokens(n_numeric + len(ENGINEERED_FEATURES), d_model)
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        self.pre_norm = nn.LayerNorm(d_model)
        self.attention = MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True, backend=backend)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, prepared: PreparedEvents) -> Tensor:
        """prepared: the own sequence from :func:`prepare_events`. Returns ``(B, d)``."""
        last_event = prepared.last_event()
        categorical, numeric, _ = last_event
        values = torch.cat([numeric.float(), engineered_features(prepared, self.amount_feature, self.window_days,
                                                                 last_event)], 1)
        tokens = torch.cat([self.cls.expand(values.shape[0], 1, -1), self.categorical(categorical),
                            self.numeric(values)], dim=1)
        normed = self.pre_norm(tokens)
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        return self.norm((tokens + attended)[:, 0])


class MixtureOfExperts(nn.Module):
    """Residual mixture-of-experts feed-forward: ``y = x + Σ_e w_e(x) FFN_e(LayerNorm(x))``, ``(B, d) -> (B, d)``.

    Gate logits ``l = W_g LayerNorm(x) (B, E)``; in training, ``gate_noise · N(0, 1)`` is added
    (noisy top-k gating); in eval there is no noise, so the same input gives the same output.
    ``w`` is the softmax over the ``top_k`` largest logits (zero elsewhere); ``top_k = E`` is
    soft gating. The experts are small two-layer GELU networks, evaluated densely (tiny ``E``).
    ``forward`` also returns the Switch load-balancing loss ``E Σ_e f_e P_e`` (``f_e``: share of
    top-k slots routed to expert ``e``, ``P_e``: mean gate probability; 1 when balanced).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, hidden: int, gate_noise: float) -> None:
        super().__init__()
        self.top_k = top_k
        self.gate_noise = gate_noise
        self.norm = nn.LayerNorm(d_model)
        self.gate = nn.Linear(d_model, n_experts)
        scale_in, scale_hidden = d_model ** -0.5, hidden ** -0.5
        self.w_in = nn.Parameter(torch.randn(n_experts, d_model, hidden) * scale_in)
        self.b_in = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w_out = nn.Parameter(torch.randn(n_experts, hidden, d_model) * scale_hidden)
        self.b_out = nn.Parameter(torch.zeros(n_experts, d_model))

    def gate_weights(self, normed: Tensor) -> Tuple[Tensor, Tensor]:
        """(routing weights ``(B, E)`` with ``top_k`` non-zeros per row, clean gate probabilities ``(B, E)``)."""
        logits = self.gate(normed)
        noisy = logits
        if self.training and self.gate_noise > 0:
            noisy = logits + self.gate_noise * torch.randn_like(logits)
        top = noisy.topk(self.top_k, dim=-1)
        masked = torch.full_like(noisy, float("-inf")).scatter(-1, top.indices, top.values)
        return torch.softmax(masked, dim=-1), torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x ``(B, d)``. Returns ``y (B, d)`` and the load-balancing loss (a scalar)."""
        normed = self.norm(x)
        weights, probabilities = self.gate_weights(normed)
        hidden = F.gelu(torch.einsum("bd,edh->beh", normed, self.w_in) + self.b_in)
        experts = torch.einsum("beh,ehd->bed", hidden, self.w_out) + self.b_out
        routed = (weights > 0).float().mean(dim=0) / self.top_k
        balance = weights.shape[-1] * (routed * probabilities.mean(dim=0)).sum()
        return x + torch.einsum("be,bed->bd", weights, experts), balance


class SequenceGate(nn.Module):
    """``h = g * h1 + (1 - g) * h2`` with ``g = sigmoid(W [h1; h2] + b)``, all ``(B, d)``; returns ``(h, g)``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * d_model, d_model)

    def forward(self, h1: Tensor, h2: Tensor) -> Tuple[Tensor, Tensor]:
        gate = torch.sigmoid(self.linear(torch.cat([h1, h2], dim=-1)))
        return gate * h1 + (1 - gate) * h2, gate


Output = Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]


class TSA(nn.Module):
    """Fraud logit of the last real event of each sequence.

    ``h = [OrderAttention(events); FeatureAttention(last event, engineered)] (B, 2d)`` →
    MLP ``(2d -> d -> d)`` (or one linear layer when ``use_mlp=False``) → MixtureOfExperts →
    LayerNorm → linear → logit ``(B,)``.

    Leak-free: the output depends on the real events of the given window only (padded entries
    are zeroed before use and masked in attention), and the window ends at the target event.

    Args:
        cardinalities: categories per categorical field; n_numeric: numeric features per event;
        amount_feature: index of the (log) amount among the numeric features;
        d_model, n_heads: width and heads of both attentions; time_dim: Time2Vec channels;
        use_mlp: the optional MLP; n_experts, top_k, expert_hidden, gate_noise: the MoE;
        dropout: attention dropout; window_days: the window of the count feature;
        backend: the ``tempattn`` backend of every attention call.
    """

    def __init__(self, *, cardinalities: Sequence[int] = (8, 3), n_numeric: int = 2, amount_feature: int = 0,
                 d_model: int = 32, n_heads: int = 4, time_dim: int = 8, use_mlp: bool = True, n_experts: int = 4,
                 top_k: int = 2, expert_hidden: int = 64, gate_noise: float = 1.0, dropout: float = 0.0,
                 window_days: float = 1.0, backend: str = "auto") -> None:
        super().__init__()
        name = type(self).__name__
        self.cardinalities = _checked_cardinalities(name, cardinalities)
        _heads.check_positive_int(name, "n_numeric", n_numeric, "the number of numeric features per event")
        _check_range(name, "amount_feature", amount_feature, 0, n_numeric - 1, "the index of the amount column")
        _heads.check_head_config(name, d_model, n_heads)
        _heads.check_positive_int(name, "time_dim", time_dim, "Time2Vec channels, e.g. 8")
        _heads.check_positive_int(name, "n_experts", n_experts, "e.g. 4 experts")
        _check_range(name, "top_k", top_k, 1, n_experts, "top_k = n_experts is soft gating")
        _heads.check_positive_int(name, "expert_hidden", expert_hidden, "the hidden width of each expert")
        _check_non_negative(name, "gate_noise", gate_noise, "the std of the training-time gate noise; 0 disables it")
        _check_non_negative(name, "window_days", window_days, "the look-back of the count feature, in days")
        self.n_numeric = n_numeric
        self.backend = _heads.check_backend(name, backend)
        dropout = _heads.check_dropout(name, dropout)
        self._order_args = (self.cardinalities, n_numeric, d_model, n_heads, time_dim, dropout, backend)
        self.order = OrderAttention(*self._order_args)
        self.features = FeatureAttention(self.cardinalities, n_numeric, amount_feature, float(window_days), d_model,
                                         n_heads, dropout, backend)
        self.mlp = (nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))
                    if use_mlp else nn.Linear(2 * d_model, d_model))
        self.moe = MixtureOfExperts(d_model, n_experts, top_k, expert_hidden, float(gate_noise))
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 1))

    def prepare(self, events: EventSequences, name: str = "events",
                reference_time: Optional[Tensor] = None) -> PreparedEvents:
        return prepare_events(events, self.cardinalities, self.n_numeric, reference_time=reference_time, name=name,
                              model=type(self).__name__)

    def get_attention_weights(self, *inputs, **kwargs) -> Dict[str, Tensor]:
        """Per-head attention weights ``(B, H, Tq, Tk)`` of every attention layer on the forward inputs
        (``events (and peer for tsa_gated)``), from the dense reference path, keyed by layer name (for monitoring; see
        :func:`tempattn.models.common.attention.get_attention_weights`)."""
        from ..common.attention import get_attention_weights
        return get_attention_weights(self, *inputs, **kwargs)

    def forward(self, events: EventSequences, *, return_aux: bool = False) -> Output:
        """events: ``EventSequences`` ``(B, T, ...)``. Returns logits ``(B,)``; with ``return_aux``
        also ``{"load_balance": scalar}``."""
        own = self.prepare(events)
        return self._classify(self.order(own), own, {}, return_aux)

    def _classify(self, sequence: Tensor, own: PreparedEvents, aux: Dict[str, Tensor], return_aux: bool) -> Output:
        hidden = self.mlp(torch.cat([sequence, self.features(own)], dim=-1))
        hidden, aux["load_balance"] = self.moe(hidden)
        logits = self.out(hidden).squeeze(-1)
        return (logits, aux) if return_aux else logits


class TSAGated(TSA):
    """Two sequences: the account's own history and a peer sequence (e.g. the merchant's recent events).

    Each is encoded by its own :class:`OrderAttention` (peer ages are measured to the target
    event's time; a peer event later than the target raises ValueError), and the two summaries
    are combined by :class:`SequenceGate`: ``h = g h_own + (1 - g) h_peer``. The feature
    attention, MLP, MoE and head are those of :class:`TSA`. Same arguments as :class:`TSA`.
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.peer_order = OrderAttention(*self._order_args)
        self.gate = SequenceGate(self.order.summary.shape[0])

    def forward(self, events: EventSequences, peer: EventSequences, *, return_aux: bool = False) -> Output:
        """events, peer: ``EventSequences`` ``(B, T, ...)`` and ``(B, T', ...)``. Returns logits ``(B,)``;
        with ``return_aux`` also ``{"load_balance": scalar, "gate": (B, d)}``."""
        own = self.prepare(events)
        _, _, target_time = own.last_event()
        # A row without own events has no target time: its peer ages fall back to the peer's last event.
        peer_prepared = self.prepare(peer, "peer", torch.where(own.has_events, target_time, float("nan")))
        sequence, gate = self.gate(self.order(own), self.peer_order(peer_prepared))
        return self._classify(sequence, own, {"gate": gate}, return_aux)


def _checked_cardinalities(model: str, cardinalities) -> Tuple[int, ...]:
    hint = "one category count per categorical field, e.g. (8, 3)"
    if not isinstance(cardinalities, (tuple, list)) or not cardinalities:
        _heads.fail(model, "cardinalities", "a non-empty tuple of positive ints", repr(cardinalities), hint, TypeError)
    for value in cardinalities:
        _heads.check_positive_int(model, "cardinalities", value, hint)
    return tuple(cardinalities)


def _check_range(model: str, name: str, value, low: int, high: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _heads.fail(model, name, f"an int in [{low}, {high}]", _heads.describe(value), hint, TypeError)
    if not low <= value <= high:
        _heads.fail(model, name, f"an int in [{low}, {high}]", value, hint)


def _check_non_negative(model: str, name: str, value, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _heads.fail(model, name, "a float >= 0", _heads.describe(value), hint, TypeError)
    if not value >= 0:
        _heads.fail(model, name, "a float >= 0", value, hint)
