"""Causal self-attention layers: plain (masked_sdpa) and with temporal structure (relpos, decay).

Each layer takes ``x (B, T, E)`` and returns ``(B, T, E)``; with ``cache=`` it decodes
incrementally and returns ``(out, new_cache)`` (see :class:`~tempattn.nn.KVCache`).
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..ops import decay_attention, masked_sdpa, relpos_attention
from ..ops.common.validation import value_checks_enabled
from . import _heads
from .cache import KVCache

CATEGORY_INIT_STD = 0.02
"""Standard deviation of the initial response-category bias table (a near-zero start)."""


class _CausalSelfAttention(nn.Module):
    """Owns the packed q/k/v projection ``in_proj (E -> 3E)`` and ``out_proj (E -> E)``.

    Subclasses add their score parameters and make one functional call in ``forward``.

    ``check_inputs`` (attribute, default True): check ``forward``'s arguments (shapes, dtypes,
    the cache, and, by the operators' policy, category values). A model that checks its own
    inputs once per call and builds every argument of the layer from them sets it to False, so
    the same tensors are not checked again in each nested layer. The operator's own checks stay.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, bias: bool, backend: str,
                 factory: dict) -> None:
        super().__init__()
        layer = type(self).__name__
        self.head_dim = _heads.check_head_config(layer, embed_dim, num_heads)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = _heads.check_dropout(layer, dropout)
        self.backend = _heads.check_backend(layer, backend)
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.check_inputs = True

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and zero biases, as ``torch.nn.MultiheadAttention``."""
        for linear in (self.in_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"bias={self.in_proj.bias is not None}, backend={self.backend!r}")

    def empty_cache(self, batch_size: int) -> KVCache:
        """A cache with no steps, to pass as ``cache=`` on the first decoding call."""
        weight = self.in_proj.weight
        empty = weight.new_zeros((batch_size, self.num_heads, 0, self.head_dim))
        return KVCache(k=empty, v=empty)

    def _project(self, x: Tensor, key_padding_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Checked ``x (B, T, E)`` to heads q, k, v ``(B, H, T, D)``."""
        if self.check_inputs:
            layer = type(self).__name__
            _heads.check_features(layer, "x", x, (3,), self.embed_dim, "(B, T, embed_dim)")
            _heads.check_key_padding_mask(layer, key_padding_mask, x.shape[0], x.shape[1])
        q, k, v = _heads.packed_projection(x, self.in_proj.weight, self.in_proj.bias)
        return (_heads.split_heads(q, self.num_heads), _heads.split_heads(k, self.num_heads),
                _heads.split_heads(v, self.num_heads))

    def _keys(self, cache: Optional[KVCache], step: KVCache) -> KVCache:
        """The keys this call attends to: the cached ones (if any) followed by the new ``step``."""
        if cache is None:
            return step
        if not self.check_inputs:
            return cache.append(step)
        if not isinstance(cache, KVCache):
            _heads.fail(type(self).__name__, "cache", "a KVCache", _heads.describe(cache),
                        "start from `layer.empty_cache(batch_size)` and pass back the returned cache", TypeError)
        expected = (step.k.shape[0], self.num_heads, self.head_dim)
        got = (cache.k.shape[0], cache.k.shape[1], cache.k.shape[3])
        if got != expected:
            _heads.fail(type(self).__name__, "cache", f"of (B, H, D) = {expected}", f"{got}",
                        "use a cache made by this layer for this batch")
        return cache.append(step)

    def _finish(self, out: Tensor, keys: KVCache, cache: Optional[KVCache], keep: Optional[int]):
        """Merge heads and project; with a cache also return the last ``keep`` keys (all when None)."""
        y = self.out_proj(_heads.merge_heads(out))
        return y if cache is None else (y, keys.keep_last(keep))


class CausalSelfAttention(_CausalSelfAttention):
    """Causal multi-head self-attention: one :func:`tempattn.masked_sdpa` call (``causal=True``).

    Dropout ``dropout`` is applied by the operator to the attention probabilities (after the
    softmax, Philox keep mask, kept values scaled by ``1/(1-p)``), in training mode only.

    Parameters: ``in_proj (3E, E)`` (packed q, k, v), ``out_proj (E, E)``, as the other
    :mod:`tempattn.nn` causal layers.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, *,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, backend, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def forward(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None, cache: Optional[KVCache] = None,
                seed: Optional[int] = None):
        """Args:
            x: ``(B, T, E)``.
            key_padding_mask: optional ``(B, T)`` bool, True = padding (never attended).
            cache: a :class:`~tempattn.nn.KVCache` of earlier steps (``empty_cache(B)`` to start).
            seed: Philox seed of the dropout mask (None: drawn from torch's generator).

        Returns:
            ``(B, T, E)``; with ``cache``, ``(out, new_cache)`` holding every step so far.
        """
        q, k, v = self._project(x, key_padding_mask)
        keys = self._keys(cache, KVCache(k, v, key_padding_mask=key_padding_mask))
        out = masked_sdpa(q, keys.k, keys.v, key_padding_mask=keys.key_padding_mask, causal=True,
                          dropout_p=_heads.dropout_p(self), seed=seed, backend=self.backend)
        return self._finish(out, keys, cache, None)


class RelativeTemporalAttention(_CausalSelfAttention):
    """Causal self-attention with a learned relative-position bias over a window (``relpos_attention``).

    Query ``i`` attends to steps ``i - window .. i``, scoring key ``j`` with
    ``q_i·k_j / sqrt(D) + rel_bias[h, i - j] + category_bias[h, categories[j]]``.

    Args:
        embed_dim: model width ``E``; num_heads: ``H``, dividing ``E``.
        window: ``W >= 0`` steps of look-back; O(T·W) compute and an O(W) decoding cache.
        n_categories: number of response categories; when set, ``forward`` needs ``categories``
            and each key gets a learned per-head bias ``category_bias_limit * tanh(e / limit)``
            from an ``(n_categories, H)`` table ``e`` (soft-clamped to ``(-limit, limit)``).
        category_bias_limit: the bound of the category bias (default 2.0).
        dropout: attention dropout in training; bias: biases on the projections.
        backend: operator backend, "auto" by default.

    Parameters: ``in_proj (3E, E)``, ``out_proj (E, E)``, ``rel_bias (H, W + 1)`` (zeros at init:
    no preferred distance), ``category_bias.weight (n_categories, H)`` (normal, std
    ``CATEGORY_INIT_STD = 0.02``, so the bias starts near zero).
    """

    def __init__(self, embed_dim: int, num_heads: int, window: int = 5, n_categories: Optional[int] = None,
                 dropout: float = 0.0, bias: bool = True, *, category_bias_limit: float = 2.0,
                 backend: str = "auto", device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__(embed_dim, num_heads, dropout, bias, backend, factory)
        layer = type(self).__name__
        _heads.check_window(layer, window, allow_none=False)
        if n_categories is not None:
            _heads.check_positive_int(layer, "n_categories", n_categories, "the number of response categories")
        if not category_bias_limit > 0:
            _heads.fail(layer, "category_bias_limit", "a positive float", category_bias_limit, "the default is 2.0")
        self.window = window
        self.n_categories = n_categories
        self.category_bias_limit = float(category_bias_limit)
        self.rel_bias = nn.Parameter(torch.empty(num_heads, window + 1, **factory))
        self.category_bias = None if n_categories is None else nn.Embedding(n_categories, num_heads, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.zeros_(self.rel_bias)
        if self.category_bias is not None:
            nn.init.normal_(self.category_bias.weight, std=CATEGORY_INIT_STD)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, window={self.window}, n_categories={self.n_categories}, "
                f"category_bias_limit={self.category_bias_limit}")

    def forward(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None, categories: Optional[Tensor] = None,
                cache: Optional[KVCache] = None):
        """Args:
            x: ``(B, T, E)``.
            key_padding_mask: optional ``(B, T)`` bool, True = padding (never attended).
            categories: ``(B, T)`` long in ``[0, n_categories)``, each step's response category;
                required exactly when the layer has ``n_categories``.
            cache: a :class:`KVCache` of earlier steps (from ``empty_cache`` or a previous call).

        Returns:
            ``(B, T, E)``; with ``cache``, ``(out, new_cache)`` where ``new_cache`` keeps the last
            ``window`` steps (the next query, with its own key, attends to ``window + 1``).
        """
        q, k, v = self._project(x, key_padding_mask)
        step = KVCache(k, v, key_padding_mask=key_padding_mask, key_bias=self._category_key_bias(categories, x))
        keys = self._keys(cache, step)
        out = relpos_attention(q, keys.k, keys.v, self.rel_bias, window=self.window,
                               key_padding_mask=keys.key_padding_mask, key_bias=keys.key_bias,
                               dropout_p=_heads.dropout_p(self), backend=self.backend)
        return self._finish(out, keys, cache, self.window)

    def _category_key_bias(self, categories: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
        """``(B, H, T)`` soft-clamped bias of each step's category, or None without categories."""
        if self.category_bias is None:
            if categories is not None:
                _heads.fail(type(self).__name__, "categories", "None for a layer built without n_categories",
                            _heads.describe(categories), "build the layer with n_categories=K to use them")
            return None
        if self.check_inputs:
            self._check_categories(categories, x)
        # the soft clamp on the (n_categories, H) table, then one gather into a contiguous (B, H, T)
        limit = self.category_bias_limit
        table = (limit * torch.tanh(self.category_bias.weight / limit)).t()  # (H, n_categories)
        B, T = categories.shape
        return table.unsqueeze(0).expand(B, -1, -1).gather(2, categories.unsqueeze(1).expand(-1, self.num_heads, T))

    def _check_categories(self, categories, x: Tensor) -> None:
        layer = type(self).__name__
        expected = tuple(x.shape[:2])
        if not isinstance(categories, Tensor) or categories.dtype != torch.long:
            _heads.fail(layer, "categories", f"a long tensor of shape (B, T) = {expected}", _heads.describe(categories),
                        "pass each step's response category, e.g. `responses.long()`", TypeError)
        if tuple(categories.shape) != expected:
            _heads.fail(layer, "categories", f"of shape (B, T) = {expected}", tuple(categories.shape),
                        "one category per batch row and time step of x")
        if not value_checks_enabled(categories) or categories.numel() == 0:
            return
        low, high = torch.aminmax(categories)
        low, high = int(low), int(high)
        if low < 0 or high >= self.n_categories:
            _heads.fail(layer, "categories", f"in [0, n_categories) = [0, {self.n_categories})",
                        f"values in [{low}, {high}]",
                        "map padding steps to a valid category and mask them with key_padding_mask")


class DecayStats(NamedTuple):
    """Per-head decay rates and mixing weights, detached, for logging: both ``(H, S)``."""
    gamma: Tensor
    alpha: Tensor


def _check_scales(layer: str, scales) -> Tuple[Tuple[float, float], ...]:
    hint = "pass pairs (lo, hi) with 0 < lo <= hi <= 1, e.g. ((0.6, 0.9), (0.95, 1.0))"
    try:
        pairs = tuple((float(lo), float(hi)) for lo, hi in scales)
    except (TypeError, ValueError):
        _heads.fail(layer, "scales", "a sequence of (lo, hi) float pairs", repr(scales), hint, TypeError)
    if not pairs or not all(0.0 < lo <= hi <= 1.0 for lo, hi in pairs):
        _heads.fail(layer, "scales", "a non-empty sequence of ranges with 0 < lo <= hi <= 1", repr(scales), hint)
    return pairs


class MultiScaleDecayAttention(_CausalSelfAttention):
    """Causal self-attention with a learned per-head mixture of exponential decays (``decay_attention``).

    Query ``i`` scores key ``j <= i`` with ``q_i·k_j / sqrt(D) + log(sum_s alpha_hs gamma_hs^Δ + eps)``
    where ``Δ = i - j`` (or ``times[i] - times[j]``). Each decay rate stays inside its range:
    ``gamma_hs = lo_s + (hi_s - lo_s) * sigmoid(gamma_raw[h, s])``, clamped to ``<= 1``;
    ``alpha_h = softmax(alpha_logits[h])``.

    Args:
        embed_dim: model width ``E``; num_heads: ``H``, dividing ``E``.
        scales: ``S`` ranges ``(lo, hi)`` with ``0 < lo <= hi <= 1`` (default fast 0.6–0.9,
            medium 0.85–1.0, slow 0.95–1.0).
        dropout: attention dropout in training; bias: biases on the projections.
        window: optional int ``W``: also drop keys more than ``W`` steps back (O(T·W)).
        eps: floor inside the log (see :func:`tempattn.decay_attention`).
        backend: operator backend, "auto" by default.

    Parameters: ``in_proj``, ``out_proj``, ``gamma_raw (H, S)`` (head ``h`` starts at the
    quantile ``(h + 0.5) / H`` of every range, so heads cover the ranges), ``alpha_logits (H, S)``
    (zeros: an even mixture). Buffers (not saved): ``gamma_low``, ``gamma_high`` ``(S,)``.
    """

    def __init__(self, embed_dim: int, num_heads: int,
                 scales: Sequence[Tuple[float, float]] = ((0.6, 0.9), (0.85, 1.0), (0.95, 1.0)),
                 dropout: float = 0.0, bias: bool = True, *, window: Optional[int] = None, eps: float = 1e-8,
                 backend: str = "auto", device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__(embed_dim, num_heads, dropout, bias, backend, factory)
        layer = type(self).__name__
        pairs = _check_scales(layer, scales)
        _heads.check_window(layer, window, allow_none=True)
        self.scales = pairs
        self.window = window
        self.eps = float(eps)
        self.register_buffer("gamma_low", torch.tensor([lo for lo, _ in pairs], **factory), persistent=False)
        self.register_buffer("gamma_high", torch.tensor([hi for _, hi in pairs], **factory), persistent=False)
        self.gamma_raw = nn.Parameter(torch.empty(num_heads, len(pairs), **factory))
        self.alpha_logits = nn.Parameter(torch.empty(num_heads, len(pairs), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        quantiles = (torch.arange(self.num_heads, dtype=torch.float64) + 0.5) / self.num_heads
        with torch.no_grad():
            self.gamma_raw.copy_(torch.logit(quantiles)[:, None].expand_as(self.gamma_raw))
        nn.init.zeros_(self.alpha_logits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scales={self.scales}, window={self.window}, eps={self.eps}"

    def gamma(self) -> Tensor:
        """Decay rates ``(H, S)`` in their ranges, differentiable."""
        span = self.gamma_high - self.gamma_low
        return (self.gamma_low + span * torch.sigmoid(self.gamma_raw)).clamp(max=1.0)

    def decay_stats(self) -> DecayStats:
        """Detached ``gamma`` and mixing weights ``alpha`` per head, both ``(H, S)``."""
        with torch.no_grad():
            return DecayStats(gamma=self.gamma(), alpha=torch.softmax(self.alpha_logits, dim=-1))

    def forward(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None, times: Optional[Tensor] = None,
                cache: Optional[KVCache] = None):
        """Args:
            x: ``(B, T, E)``.
            key_padding_mask: optional ``(B, T)`` bool, True = padding (never attended).
            times: optional ``(B, T)`` non-decreasing timestamps; the decay then runs over
                elapsed time instead of steps. Use float64 for epoch seconds.
            cache: a :class:`KVCache` of earlier steps (from ``empty_cache`` or a previous call).

        Returns:
            ``(B, T, E)``; with ``cache``, ``(out, new_cache)`` where ``new_cache`` keeps the last
            ``window`` steps (all steps when ``window`` is None).
        """
        q, k, v = self._project(x, key_padding_mask)
        if self.check_inputs:
            self._check_times(times, x)
        keys = self._keys(cache, KVCache(k, v, key_padding_mask=key_padding_mask, times=times))
        out = decay_attention(q, keys.k, keys.v, torch.log(self.gamma()), self.alpha_logits, times=keys.times,
                              eps=self.eps, window=self.window, key_padding_mask=keys.key_padding_mask,
                              dropout_p=_heads.dropout_p(self), backend=self.backend)
        return self._finish(out, keys, cache, self.window)

    def _check_times(self, times: Optional[Tensor], x: Tensor) -> None:
        if times is None:
            return
        expected = tuple(x.shape[:2])
        if not isinstance(times, Tensor) or not times.is_floating_point():
            _heads.fail(type(self).__name__, "times", f"a float tensor of shape (B, T) = {expected}",
                        _heads.describe(times), "pass timestamps as float64 seconds", TypeError)
        if tuple(times.shape) != expected:
            _heads.fail(type(self).__name__, "times", f"of shape (B, T) = {expected}", tuple(times.shape),
                        "one timestamp per batch row and time step of x")
