"""Knowledge tracing with GPCM heads: attention → causal context → DKVMN memory → IRT parameters.

Shapes: ``B`` students, ``T`` steps (answered items in test order), ``E`` model width, ``K``
response categories, ``N`` memory slots, ``V`` memory value width, ``I`` items.

Step ``t`` predicts the response ``r_t`` to item ``q_t`` from the items ``q_0..q_t`` and the
responses ``r_0..r_{t-1}`` only (see :func:`shifted_interactions` and :class:`DKVMNMemory`).
"""
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...nn import MultiheadAttention, RelativeTemporalAttention, TemporalContext
from ...nn._heads import describe, fail
from ...ops.common.validation import value_checks_enabled

__all__ = ["GPCMKnowledgeTracer", "GPCMPrediction", "DKVMNMemory", "gpcm_log_probs", "ordered_thresholds",
           "shifted_interactions", "linear_recurrence", "ATTENTION_KINDS"]

ATTENTION_KINDS = ("relative", "causal")
"""``relative``: RelativeTemporalAttention (window, response-category key bias); ``causal``: plain causal."""

_MODEL = "GPCMKnowledgeTracer"
_SOFTPLUS_INVERSE_OF_ONE = math.log(math.e - 1)


def _check_int(name: str, value, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(_MODEL, name, f"an int >= {minimum}", describe(value), hint, TypeError)
    if value < minimum:
        fail(_MODEL, name, f"an int >= {minimum}", value, hint)


def ordered_thresholds(first: Tensor, raw_steps: Tensor) -> Tensor:
    """Strictly increasing thresholds ``β_1 < … < β_{K-1}``: the first plus cumulative softplus steps.

    Args: ``first (..., 1)``, ``raw_steps (..., K - 2)`` unconstrained. Returns ``(..., K - 1)``.
    """
    return torch.cat([first, first + torch.cumsum(F.softplus(raw_steps), dim=-1)], dim=-1)


def gpcm_log_probs(theta: Tensor, alpha: Tensor, beta: Tensor, category_mask: Optional[Tensor] = None) -> Tensor:
    """Log category probabilities of the generalised partial credit model.

    ``log P(X = k) = Σ_{v=1..k} α (θ − β_v) − logsumexp_c Σ_{v=1..c} α (θ − β_v)``; the sum for
    ``k = 0`` is empty (0).

    Args:
        theta: abilities ``(...)``; alpha: discriminations ``(...)`` (> 0); beta: thresholds
            ``(..., K - 1)``; broadcastable together.
        category_mask: optional bool ``(..., K)``, True = the category exists for this item; the
            others get probability 0 (an item scored on fewer categories).

    Returns: ``(..., K)`` log probabilities.
    """
    steps = alpha[..., None] * (theta[..., None] - beta)
    logits = F.pad(torch.cumsum(steps, dim=-1), (1, 0))
    if category_mask is not None:
        logits = logits.masked_fill(~category_mask, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def shifted_interactions(items: Tensor, responses: Tensor, padding_mask: Tensor, n_items: int,
                         n_categories: int) -> Tuple[Tensor, Tensor]:
    """What step ``t`` may know of the responses: the previous step's interaction, never its own.

    Args: ``items``, ``responses`` ``(B, T)`` long (in range everywhere), ``padding_mask (B, T)``
    bool, True = padding.

    Returns ``(previous_interaction, previous_response)``, both ``(B, T)`` long, with
    ``previous_interaction[t] = items[t-1] * K + responses[t-1]`` and ``previous_response[t] =
    responses[t-1]``; step 0 and every step after a padded one get the start tokens ``I * K`` and
    ``K`` ("no previous response").
    """
    return _shift(items * n_categories + responses, responses, padding_mask, n_items, n_categories)


def _shift(interaction: Tensor, responses: Tensor, padding_mask: Tensor, n_items: int,
           n_categories: int) -> Tuple[Tensor, Tensor]:
    """:func:`shifted_interactions` from the interactions ``items * K + responses`` ``(B, T)``."""
    previous_padding = F.pad(padding_mask[:, :-1], (1, 0), value=True)
    previous_interaction = F.pad(interaction[:, :-1], (1, 0)).masked_fill(previous_padding, n_items * n_categories)
    previous_response = F.pad(responses[:, :-1], (1, 0)).masked_fill(previous_padding, n_categories)
    return previous_interaction, previous_response


class DKVMNMemory(nn.Module):
    """Dynamic key-value memory (Zhang et al., 2017) read before it is written at every step.

    ``w_t = softmax(k_t M_kᵀ)`` over a static key memory ``M_k (N, E)``; the read is
    ``Σ_i w_t(i) M_v(i)`` from the value memory as it stood *before* step ``t``; then step ``t``
    writes with erase ``e_t = sigmoid(W_e u_t)`` and add ``a_t = tanh(W_a u_t)``:
    ``M_v ← M_v ∘ (1 − w_t e_tᵀ) + w_t a_tᵀ``. Padded steps neither read anything useful nor write.

    Args: embed_dim ``E`` (addressing keys), write_dim (width of ``u_t``), memory_size ``N``,
    memory_dim ``V``.

    Parameters: ``key_memory (N, E)``, ``initial_values (N, V)`` (the value memory of every
    student at step 0), ``erase (write_dim -> V)``, ``add (write_dim -> V)``.
    """

    def __init__(self, embed_dim: int, write_dim: int, memory_size: int, memory_dim: int) -> None:
        super().__init__()
        self.key_memory = nn.Parameter(torch.randn(memory_size, embed_dim) / embed_dim ** 0.5)
        self.initial_values = nn.Parameter(0.1 * torch.randn(memory_size, memory_dim))
        self.erase = nn.Linear(write_dim, memory_dim)
        self.add = nn.Linear(write_dim, memory_dim)

    def forward(self, keys: Tensor, writes: Tensor, padding_mask: Tensor) -> Tensor:
        """Args: ``keys (B, T, E)``, ``writes (B, T, write_dim)`` (``u_t``, may hold ``r_t``),
        ``padding_mask (B, T)`` bool, True = padding. Returns the reads ``(B, T, V)``.

        No loop over steps. A write is elementwise affine in ``M_v``, ``M_v ← (1 − w eᵀ) ∘ M_v + w aᵀ``
        (a padded step writes with ``w = 0``: the identity). Steps go in pairs ``(2k, 2k + 1)``: the
        memory ``S_k`` before each pair is one :func:`linear_recurrence` over the pairs' composed writes.
        Step ``2k`` reads ``w₀ · S_k``; step ``2k + 1`` reads the memory after write ``2k``,
        ``S_k + w₀ ∘ (a₀ − e₀ ∘ S_k)``, i.e. ``w₁ · S_k + (w₁ · w₀) a₀ − e₀ ∘ ((w₁ ∘ w₀) · S_k)`` — so only the
        ``T / 2`` memories ``S_k`` are ever formed. They are formed :data:`MEMORY_CHUNK` pairs at a time, the
        last one carried into the next chunk, so the working set stays in cache at any ``T`` (a loop over
        ``T / (2 · MEMORY_CHUNK)`` chunks, none at the lengths of the datasets).
        """
        B, T = keys.shape[:2]
        weights = torch.softmax(keys @ self.key_memory.T, dim=-1)  # (B, T, N)
        erase, add = torch.sigmoid(self.erase(writes)), torch.tanh(self.add(writes))  # (B, T, V)
        write_weights = weights.masked_fill(padding_mask[..., None], 0.0)
        if T % 2:  # a last write that is never read, so the steps pair up
            write_weights, erase, add = (F.pad(x, (0, 0, 0, 1)) for x in (write_weights, erase, add))
            weights = F.pad(weights, (0, 0, 0, 1))
        memory = self.initial_values.expand(B, -1, -1)  # (B, N, V): the memory before the chunk
        reads = []
        for start in range(0, weights.shape[1], 2 * MEMORY_CHUNK):
            part = slice(start, start + 2 * MEMORY_CHUNK)
            chunk_reads, memory = self._pairs(weights[:, part], write_weights[:, part], erase[:, part],
                                              add[:, part], memory)
            reads.append(chunk_reads)
        return torch.cat(reads, dim=1)[:, :T] if len(reads) > 1 else reads[0][:, :T]

    @staticmethod
    def _pairs(weights: Tensor, write_weights: Tensor, erase: Tensor, add: Tensor,
               memory: Tensor) -> Tuple[Tensor, Tensor]:
        """The reads ``(B, 2P, V)`` of ``2P`` steps from ``memory (B, N, V)`` before them, and the memory after."""
        pair = lambda x: x.unflatten(1, (-1, 2)).unbind(2)  # noqa: E731  (B, 2P, X) -> 2 x (B, P, X)
        (w0, w1), (u0, u1), (e0, e1), (a0, a1) = pair(weights), pair(write_weights), pair(erase), pair(add)
        keep1 = 1.0 - u1[..., None] * e1[:, :, None]  # (B, P, N, V): what write 2k + 1 keeps
        decay = keep1 * (1.0 - u0[..., None] * e0[:, :, None])
        inputs = torch.addcmul(u1[..., None] * a1[:, :, None], keep1, u0[..., None] * a0[:, :, None])
        after = linear_recurrence(decay, inputs, memory)  # (B, P, N, V): after each pair
        before = torch.cat([memory[:, None], after[:, :-1]], dim=1)  # S_k, before pair k
        both = u0 * w1  # (B, P, N)
        reads = torch.einsum("bkjn,bknv->bkjv", torch.stack([w0, w1, both], dim=2), before)  # (B, P, 3, V)
        second = reads[:, :, 1] + both.sum(-1, keepdim=True) * a0 - e0 * reads[:, :, 2]
        return torch.stack([reads[:, :, 0], second], dim=2).flatten(1, 2), after[:, -1]


MEMORY_CHUNK = 32
"""Step pairs per chunk of :meth:`DKVMNMemory.forward` (64 steps; the datasets' sequences are shorter)."""


def linear_recurrence(decay: Tensor, inputs: Tensor, initial: Tensor) -> Tensor:
    """Every state of ``h_t = decay_t ∘ h_{t-1} + inputs_t`` (``t = 0 .. T-1``, ``h_{-1} = initial``), without a
    loop over ``t``.

    ``decay``, ``inputs``: ``(B, T, *S)``; ``initial``: ``(B, *S)``; returns ``(B, T, *S)``. A work-efficient
    parallel scan over the affine maps ``h ↦ a h + b``: compose neighbouring steps in pairs,
    ``(a₂, b₂) ∘ (a₁, b₁) = (a₂ a₁, a₂ b₁ + b₂)``; the states after each pair are the same recurrence at
    half the length (recursively, ``log2 T`` levels, ``2 T`` maps in all); the state after the first step of
    each pair is one more step from the state before it. Only products and sums, no division: as stable as
    the loop, and linear work in ``T``.
    """
    T = decay.shape[1]
    if T == 0:
        return inputs.new_empty(inputs.shape)
    if T == 1:
        return torch.addcmul(inputs, decay, initial[:, None])
    half = T // 2
    a1, a2 = decay[:, 0:2 * half:2], decay[:, 1:2 * half:2]  # the first and second step of each pair
    b1, b2 = inputs[:, 0:2 * half:2], inputs[:, 1:2 * half:2]
    pairs = linear_recurrence(a2 * a1, torch.addcmul(b2, a2, b1), initial)  # the state after each pair
    before_pairs = torch.cat([initial[:, None], pairs[:, :half - 1]], dim=1) if half > 1 else initial[:, None]
    firsts = torch.addcmul(b1, a1, before_pairs)  # the state after the first step of each pair
    states = torch.stack([firsts, pairs], dim=2).flatten(1, 2)  # interleaved: steps 0 .. 2·half - 1
    if T % 2:  # the odd last step
        states = torch.cat([states, torch.addcmul(inputs[:, -1:], decay[:, -1:], pairs[:, -1:])], dim=1)
    return states


class _RelativeMixer(nn.Module):
    """RelativeTemporalAttention keyed on each step's previous response (category ``K`` = none)."""

    def __init__(self, embed_dim: int, num_heads: int, window: int, n_categories: int, dropout: float,
                 backend: str) -> None:
        super().__init__()
        self.attention = RelativeTemporalAttention(embed_dim, num_heads, window=window, n_categories=n_categories + 1,
                                                   dropout=dropout, backend=backend)
        # GPCMKnowledgeTracer checks its inputs once per call; x, the mask and the categories it
        # passes here are built from them (categories in [0, K]), so the layer need not check again.
        self.attention.check_inputs = False

    def forward(self, x: Tensor, padding_mask: Tensor, previous_response: Tensor) -> Tensor:
        return self.attention(x, key_padding_mask=padding_mask, categories=previous_response)


class _CausalMixer(nn.Module):
    """Plain causal multi-head attention (the baseline): no window, no relative or response bias."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.attention = MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True, backend=backend)

    def forward(self, x: Tensor, padding_mask: Tensor, previous_response: Tensor) -> Tensor:
        out, _ = self.attention(x, x, x, key_padding_mask=padding_mask, need_weights=False, is_causal=True)
        return out


class GPCMPrediction(NamedTuple):
    """Per-step outputs: ``log_probs (B, T, K)``, ``theta (B, T)``, ``alpha (B, T)``, ``beta (B, T, K - 1)``
    (the item parameters of each step's item)."""
    log_probs: Tensor
    theta: Tensor
    alpha: Tensor
    beta: Tensor


class GPCMKnowledgeTracer(nn.Module):
    """Attention + DKVMN knowledge tracer with generalised-partial-credit-model heads.

    Token ``x_t = E_item[q_t] + E_interaction[q_{t-1}, r_{t-1}]`` (the response stream shifted by one
    step) → causal attention (``"relative"``: RelativeTemporalAttention over the last ``window + 1``
    steps with a key bias from the previous response; ``"causal"``: plain causal attention) with
    a residual and LayerNorm → TemporalContext (causal depthwise convolution) → ``h_t``. DKVMN
    memory addressed by ``h_t``, read before step ``t`` writes ``u_t = [h_t, E_interaction[q_t, r_t]]``.
    Ability ``θ_t = w · tanh(W_f [read_t, h_t]) + b``; item ``j``: discrimination
    ``α_j = softplus(a_j)`` and thresholds ``β_j`` from :func:`ordered_thresholds`; output
    ``gpcm_log_probs(θ_t, α_{q_t}, β_{q_t})``.

    Args:
        n_items: ``I``; n_categories: ``K >= 2``.
        attention: one of :data:`ATTENTION_KINDS`.
        window: look-back of the relative attention (``"relative"`` only; None for ``"causal"``).
        embed_dim: width ``E``.
        num_heads: attention heads.
        memory_size: memory slots ``N``.
        memory_dim: memory width ``V``.
        summary_dim: width of the ability summary.
        context_kernel: TemporalContext kernel size.
        dropout: attention and embedding dropout, training only.
        backend: tempattn operator backend.
        item_categories: optional per-item number of categories ``(I,)`` in ``[2, K]``; an item
            with ``c`` categories never predicts categories ``>= c``.
    """

    def __init__(self, n_items: int, n_categories: int, *, attention: str = "relative", window: Optional[int] = 5,
                 embed_dim: int = 32, num_heads: int = 4, memory_size: int = 16, memory_dim: int = 32,
                 summary_dim: int = 32, context_kernel: int = 3, dropout: float = 0.0,
                 item_categories: Optional[Sequence[int]] = None, backend: str = "auto") -> None:
        super().__init__()
        _check_int("n_items", n_items, 1, "the number of distinct items in the test")
        _check_int("n_categories", n_categories, 2, "K = 2 for correct/incorrect, K = 5 for scores 0..4")
        for name, value in (("memory_size", memory_size), ("memory_dim", memory_dim), ("summary_dim", summary_dim)):
            _check_int(name, value, 1, "a small width such as 16 or 32")
        self.n_items, self.n_categories, self.attention_kind = n_items, n_categories, attention
        self.item_embedding = nn.Embedding(n_items, embed_dim)
        # one extra row: the start token, "no previous interaction"
        self.interaction_embedding = nn.Embedding(n_items * n_categories + 1, embed_dim)
        self.embedding_dropout = nn.Dropout(dropout)
        self.mixer = self._build_mixer(attention, window, embed_dim, num_heads, dropout, backend)
        self.norm = nn.LayerNorm(embed_dim)
        self.context = TemporalContext(embed_dim, context_kernel)
        self.memory = DKVMNMemory(embed_dim, 2 * embed_dim, memory_size, memory_dim)
        self.summary = nn.Linear(memory_dim + embed_dim, summary_dim)
        self.ability = nn.Linear(summary_dim, 1)
        # every item starts at α = 1 with thresholds 1 apart, centred on 0
        self.discrimination_raw = nn.Parameter(torch.full((n_items,), _SOFTPLUS_INVERSE_OF_ONE))
        self.threshold_first = nn.Parameter(torch.full((n_items, 1), -(n_categories - 2) / 2))
        self.threshold_steps_raw = nn.Parameter(torch.full((n_items, n_categories - 2), _SOFTPLUS_INVERSE_OF_ONE))
        self.register_buffer("category_mask", self._category_mask(item_categories), persistent=False)

    def _build_mixer(self, attention: str, window: Optional[int], embed_dim: int, num_heads: int, dropout: float,
                     backend: str) -> nn.Module:
        if attention == "relative":
            if window is None:
                fail(_MODEL, "window", "an int >= 0 for attention='relative'", None,
                     "the design uses window=5")
            return _RelativeMixer(embed_dim, num_heads, window, self.n_categories, dropout, backend)
        if attention == "causal":
            if window is not None:
                fail(_MODEL, "window", "None for attention='causal'", window,
                     "plain causal attention sees every earlier step; use attention='relative' for a window")
            return _CausalMixer(embed_dim, num_heads, dropout, backend)
        return fail(_MODEL, "attention", f"one of {ATTENTION_KINDS}", repr(attention),
                    "'relative' is the model, 'causal' its baseline")

    def _category_mask(self, item_categories: Optional[Sequence[int]]) -> Optional[Tensor]:
        """``(I, K)`` bool, True = the category exists for the item; None when every item has ``K``."""
        if item_categories is None:
            return None
        counts = torch.as_tensor(item_categories)
        if counts.shape != (self.n_items,) or counts.is_floating_point() or counts.dtype == torch.bool:
            fail(_MODEL, "item_categories", f"a sequence of {self.n_items} ints (one per item)",
                 describe(counts), "the number of score categories of each item, e.g. max score + 1")
        if bool(((counts < 2) | (counts > self.n_categories)).any()):
            fail(_MODEL, "item_categories", f"in [2, n_categories] = [2, {self.n_categories}]",
                 f"values in [{int(counts.min())}, {int(counts.max())}]",
                 "every item needs at least two categories and at most n_categories")
        return torch.arange(self.n_categories) < counts[:, None]

    def extra_repr(self) -> str:
        return f"n_items={self.n_items}, n_categories={self.n_categories}, attention={self.attention_kind!r}"

    def item_parameters(self) -> Tuple[Tensor, Tensor]:
        """Discriminations ``α (I,)`` (> 0) and ordered thresholds ``β (I, K - 1)``, differentiable."""
        return F.softplus(self.discrimination_raw), ordered_thresholds(self.threshold_first, self.threshold_steps_raw)

    def get_attention_weights(self, *inputs, **kwargs) -> Dict[str, Tensor]:
        """Per-head attention weights ``(B, H, Tq, Tk)`` of every attention layer on the forward inputs
        (``items, responses, padding_mask``), from the dense reference path, keyed by layer name (for monitoring; see
        :func:`tempattn.models.common.attention.get_attention_weights`)."""
        from ..common.attention import get_attention_weights
        return get_attention_weights(self, *inputs, **kwargs)

    def forward(self, items: Tensor, responses: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """Log probabilities ``(B, T, K)`` of each step's response (see :meth:`predict`)."""
        return self.predict(items, responses, padding_mask).log_probs

    def predict(self, items: Tensor, responses: Tensor, padding_mask: Optional[Tensor] = None) -> GPCMPrediction:
        """Predict every step's response from the earlier responses.

        Args:
            items: ``(B, T)`` long in ``[0, I)``, the items in the order they were answered.
            responses: ``(B, T)`` long in ``[0, K)``; the prediction for step ``t`` uses
                ``responses[:, :t]`` only. Missing responses (NaN in a response matrix) have no
                long value: drop them from the sequence (:func:`~tempattn.models.gpcm.data.sequences_from_matrix`).
            padding_mask: optional ``(B, T)`` bool, True = padding (ignored; its items and responses
                may hold anything in range or not).

        Returns: :class:`GPCMPrediction` (``log_probs (B, T, K)``; padded steps hold finite junk).
        """
        padding_mask = self._check_inputs(items, responses, padding_mask)
        items, responses = items.masked_fill(padding_mask, 0), responses.masked_fill(padding_mask, 0)
        self._check_values(items, responses, padding_mask)
        interaction = items * self.n_categories + responses  # (q_t, r_t): written to memory at step t only
        previous_interaction, previous_response = _shift(interaction, responses, padding_mask, self.n_items,
                                                         self.n_categories)
        x = self.embedding_dropout(self.item_embedding(items) + self.interaction_embedding(previous_interaction))
        h = self.norm(x + self.mixer(x, padding_mask, previous_response))
        h = self.context(h.masked_fill(padding_mask[..., None], 0.0))  # (B, T, E); zeros keep padding out
        current = self.interaction_embedding(interaction)
        reads = self.memory(h, torch.cat([h, current], dim=-1), padding_mask)  # (B, T, V), before step t writes
        theta = self.ability(torch.tanh(self.summary(torch.cat([reads, h], dim=-1)))).squeeze(-1)
        alpha, beta = self.item_parameters()
        alpha, beta = alpha[items], beta[items]
        mask = None if self.category_mask is None else self.category_mask[items]
        return GPCMPrediction(gpcm_log_probs(theta, alpha, beta, mask), theta, alpha, beta)

    def _check_inputs(self, items: Tensor, responses: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        """Check the inputs and return the padding mask (all False when None)."""
        hint_items = "item ids as a (B, T) long tensor, e.g. `items.long()`"
        if not isinstance(items, Tensor) or items.dtype != torch.long or items.dim() != 2:
            fail(_MODEL, "items", "a (B, T) long tensor", describe(items), hint_items, TypeError)
        if items.shape[1] == 0:
            fail(_MODEL, "items", "at least one step (T >= 1)", tuple(items.shape), "drop empty batches")
        if not isinstance(responses, Tensor) or responses.dtype != torch.long:
            fail(_MODEL, "responses", "a (B, T) long tensor of categories", describe(responses),
                 "missing (NaN) responses cannot be fed to the model: drop them with "
                 "`gpcm.data.sequences_from_matrix`, then pass `.long()` categories", TypeError)
        if responses.shape != items.shape:
            fail(_MODEL, "responses", f"of the items' shape {tuple(items.shape)}", tuple(responses.shape),
                 "one response per item")
        if padding_mask is None:
            padding_mask = torch.zeros_like(items, dtype=torch.bool)
        elif not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
            fail(_MODEL, "padding_mask", "a (B, T) bool tensor (True = padding)", describe(padding_mask),
                 "build it as `lengths[:, None] <= torch.arange(T)`", TypeError)
        elif padding_mask.shape != items.shape:
            fail(_MODEL, "padding_mask", f"of the items' shape {tuple(items.shape)}", tuple(padding_mask.shape),
                 "one flag per step")
        return padding_mask

    def _check_values(self, items: Tensor, responses: Tensor, padding_mask: Tensor) -> None:
        """Ids in range at the non-padded steps: one pass over ``items``, ``responses`` ``(B, T)`` whose
        padded steps are already 0 (policy: CPU always, GPU under TEMPATTN_DEBUG=1, never compiling)."""
        if not value_checks_enabled(items) or items.numel() == 0:
            return
        low, high = torch.stack([items, responses]).flatten(1).aminmax(dim=1)
        (items_low, responses_low), (items_high, responses_high) = low.tolist(), high.tolist()
        if items_low < 0 or items_high >= self.n_items:
            self._range_error("items", items, padding_mask, self.n_items, "ids of items unknown to the model")
        if responses_low < 0 or responses_high >= self.n_categories:
            self._range_error("responses", responses, padding_mask, self.n_categories,
                              "categories are 0..K-1; rescore or rebuild the model with the right n_categories")

    @staticmethod
    def _range_error(name: str, values: Tensor, padding_mask: Tensor, size: int, hint: str) -> None:
        real = values[~padding_mask]
        fail(_MODEL, name, f"in [0, {size}) at non-padded steps", f"values in [{int(real.min())}, {int(real.max())}]",
             hint)
