"""Character language models: a causal self-attention transformer and its LSTM baseline.

Shapes: ``B`` batch, ``T`` sequence length, ``V`` vocabulary size, ``E`` model width,
``H`` heads, ``L`` layers. Token ids are ``torch.long`` in ``[0, V)``.
"""
import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...nn import KVCache
from ...nn import CausalSelfAttention
from ...nn._heads import check_dropout, check_head_config, check_positive_int, describe, fail
from ...ops.common.validation import value_checks_enabled

__all__ = ["TransformerBlock", "CharLanguageModel", "CharTransformerLM", "CharLSTM",
           "check_sampling_args", "filter_logits", "next_token_probs", "sample_next",
           "lstm_parameter_count", "matched_lstm_hidden", "build_char_lm", "build_char_lstm"]

EMBEDDING_INIT_STD = 0.02
"""Std of the token/position embeddings at init: small, so tied-head logits start near uniform."""


# ---- sampling ------------------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sampling_args(temperature, top_k, top_p, vocab_size: int) -> None:
    """``temperature > 0``, ``top_k`` None or an int in ``[1, vocab_size]``, ``top_p`` None or in ``(0, 1]``."""
    where = "generate"
    if not _is_real(temperature):
        fail(where, "temperature", "a positive float", describe(temperature), "e.g. temperature=0.8", TypeError)
    if not 0.0 < temperature < math.inf:
        fail(where, "temperature", "a finite float > 0", temperature,
             "use top_k=1 for greedy decoding; temperature=1 samples the model's distribution")
    if top_k is not None:
        if not _is_int(top_k):
            fail(where, "top_k", "None or an int", describe(top_k), "e.g. top_k=10", TypeError)
        if not 1 <= top_k <= vocab_size:
            fail(where, "top_k", f"in [1, vocab_size] = [1, {vocab_size}]", top_k,
                 "top_k keeps the k most likely characters; None keeps all")
    if top_p is not None:
        if not _is_real(top_p):
            fail(where, "top_p", "None or a float in (0, 1]", describe(top_p), "e.g. top_p=0.9", TypeError)
        if not 0.0 < top_p <= 1.0:
            fail(where, "top_p", "in (0, 1]", top_p, "top_p is a probability mass; 1 keeps all characters")


def filter_logits(logits: Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> Tensor:
    """``logits (..., V)`` with the characters outside the top-k and the nucleus set to ``-inf``.

    top-k keeps the ``k`` largest logits (and any tied with the k-th). top-p then keeps the
    smallest set of most likely characters whose probability mass is ``>= top_p``: a character
    is dropped when the mass of the characters ranked above it already reaches ``top_p``, so
    the most likely character always stays.
    """
    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, -math.inf)
    if top_p is not None:
        sorted_probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        mass_above = F.pad(sorted_probs.cumsum(dim=-1)[..., :-1], (1, 0))
        drop_sorted = mass_above >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def next_token_probs(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                     top_p: Optional[float] = None) -> Tensor:
    """Sampling distribution ``(..., V)``: softmax of ``logits / temperature`` after top-k and top-p."""
    return torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """One character id per row of ``logits (B, V)``: ``(B,)`` long, drawn with ``generator``."""
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---- the shared interface: checked ids and generation ---------------------------------------------

class CharLanguageModel(nn.Module):
    """Base of the character models: ``forward(ids (B, T)) -> logits (B, T, V)`` and :meth:`generate`.

    Subclasses set ``vocab_size`` and implement ``_start(prompt (B, T)) -> (logits (B, V), state)``
    (the next-character logits after the prompt) and ``_step(token (B,), state) -> (logits, state)``.
    """
    vocab_size: int

    def _check_ids(self, ids, name: str, max_len: Optional[int] = None) -> Tensor:
        """``ids`` must be a ``(B, T)`` long tensor, ``1 <= T <= max_len``, values in ``[0, V)``."""
        where = type(self).__name__
        if not isinstance(ids, Tensor) or ids.dtype != torch.long:
            fail(where, name, "a long tensor of shape (B, T)", describe(ids), f"use `{name}.long()`", TypeError)
        limit = "" if max_len is None else f", T <= context = {max_len}"
        if ids.dim() != 2 or ids.shape[1] == 0 or (max_len is not None and ids.shape[1] > max_len):
            fail(where, name, f"of shape (B, T) with T >= 1{limit}", tuple(ids.shape),
                 "split long text into windows of at most `context` characters")
        if value_checks_enabled(ids) and ids.numel():
            low, high = torch.aminmax(ids)  # one pass
            low, high = int(low), int(high)
            if low < 0 or high >= self.vocab_size:
                fail(where, name, f"ids in [0, vocab_size) = [0, {self.vocab_size})", f"values in [{low}, {high}]",
                     "encode text with the corpus' CharVocab")
        return ids

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """Continue ``prompt_ids`` by sampling ``max_new_tokens`` characters (in eval mode, no dropout).

        Args:
            prompt_ids: ``(T,)`` or ``(B, T)`` long, ``T >= 1``.
            max_new_tokens: number of characters to add, ``>= 0``.
            temperature: ``> 0``; logits are divided by it before top-k/top-p filtering.
            top_k: keep the ``k`` most likely characters (None: all).
            top_p: keep the nucleus of mass ``>= top_p`` (None: all); see :func:`filter_logits`.
            generator: the ``torch.Generator`` (on the model's device) the draws use; the same
                generator state gives the same characters.

        Returns:
            prompt followed by the new characters: ``(T + max_new_tokens,)`` or ``(B, T + max_new_tokens)``.
        """
        check_sampling_args(temperature, top_k, top_p, self.vocab_size)
        if not _is_int(max_new_tokens):
            fail("generate", "max_new_tokens", "an int >= 0", describe(max_new_tokens), "e.g. max_new_tokens=200",
                 TypeError)
        if max_new_tokens < 0:
            fail("generate", "max_new_tokens", "an int >= 0", max_new_tokens, "0 returns the prompt unchanged")
        batched = not (isinstance(prompt_ids, Tensor) and prompt_ids.dim() == 1)
        prompt = self._check_ids(prompt_ids if batched else prompt_ids.unsqueeze(0), "prompt_ids")
        was_training = self.training
        self.eval()
        try:
            new_tokens = self._sample(prompt, max_new_tokens, temperature, top_k, top_p, generator)
        finally:
            self.train(was_training)
        out = torch.cat([prompt, *(t[:, None] for t in new_tokens)], dim=1)
        return out if batched else out[0]

    def _sample(self, prompt: Tensor, n: int, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> List[Tensor]:
        tokens: List[Tensor] = []
        if n == 0:
            return tokens
        logits, state = self._start(prompt)
        for i in range(n):
            if i:
                logits, state = self._step(tokens[-1], state)
            tokens.append(sample_next(logits, temperature, top_k, top_p, generator))
        return tokens

    def _start(self, prompt: Tensor) -> Tuple[Tensor, Any]:
        raise NotImplementedError

    def _step(self, token: Tensor, state: Any) -> Tuple[Tensor, Any]:
        raise NotImplementedError


# ---- the causal self-attention transformer -----------------------------------------------------------

class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``+ MLP(LN(.))`` (GELU, hidden ``mlp_ratio * E``)."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout, backend=backend)
        self.mlp_norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_ratio * embed_dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * embed_dim, embed_dim))

    def forward(self, x: Tensor, cache: Optional[KVCache] = None) -> Tuple[Tensor, Optional[KVCache]]:
        """``x (B, T, E)`` -> ``(B, T, E)`` and the extended cache (None without a cache)."""
        if cache is None:
            x = x + self.attn(self.attn_norm(x))
        else:
            attended, cache = self.attn(self.attn_norm(x), cache=cache)
            x = x + attended
        return x + self.mlp(self.mlp_norm(x)), cache


class _DecodeState(NamedTuple):
    tokens: Tensor                     # (B, <= context) the characters the next prediction sees
    caches: Optional[List[KVCache]]    # one per block; None once the window has slid


class CharTransformerLM(CharLanguageModel):
    """Causal self-attention character LM: token + learned position embedding, ``L`` pre-norm
    :class:`TransformerBlock`, final LayerNorm, linear head (tied to the token embedding by default).

    Args:
        vocab_size: ``V``; context: the most positions ``T`` the model sees (position table size).
        embed_dim: ``E``; num_heads: ``H`` (divides ``E``); num_layers: ``L``; mlp_ratio: MLP width / E.
        dropout: attention-probability dropout, in ``[0, 1)``, training mode only.
        tie_weights: share the head's weight with the token embedding.
        backend: :func:`tempattn.masked_sdpa` backend ("auto", "cpu", ...).

    ``forward(ids (B, T)) -> logits (B, T, V)``; the logits at ``t`` depend on ``ids[:, :t+1]`` only.
    """

    def __init__(self, vocab_size: int = 128, context: int = 128, embed_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 2, mlp_ratio: int = 4, dropout: float = 0.1, tie_weights: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        where = type(self).__name__
        for name, value in (("vocab_size", vocab_size), ("context", context), ("num_layers", num_layers),
                            ("mlp_ratio", mlp_ratio)):
            check_positive_int(where, name, value, "a small model uses e.g. context=128, num_layers=2, mlp_ratio=4")
        check_head_config(where, embed_dim, num_heads)
        check_dropout(where, dropout)
        if not isinstance(tie_weights, bool):
            fail(where, "tie_weights", "a bool", describe(tie_weights), "True shares head and embedding", TypeError)
        self.vocab_size, self.context = vocab_size, context
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(context, embed_dim)
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout, backend)
                                    for _ in range(num_layers))
        for block in self.blocks:  # the model checks the ids; it builds each layer's input and cache itself
            block.attn.check_inputs = False
        self.final_norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        for embedding in (self.token_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=EMBEDDING_INIT_STD)
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def get_attention_weights(self, *inputs, **kwargs) -> Dict[str, Tensor]:
        """Per-head attention weights ``(B, H, Tq, Tk)`` of every attention layer on the forward inputs
        (``ids``), from the dense reference path, keyed by layer name (for monitoring; see
        :func:`tempattn.models.common.attention.get_attention_weights`)."""
        from ..common.attention import get_attention_weights
        return get_attention_weights(self, *inputs, **kwargs)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long, ``T <= context`` -> logits ``(B, T, V)``."""
        logits, _ = self._run(self._check_ids(ids, "ids", self.context), 0, None)
        return logits

    def _run(self, ids: Tensor, start: int,
             caches: Optional[List[KVCache]]) -> Tuple[Tensor, Optional[List[KVCache]]]:
        """Logits ``(B, T, V)`` of ``ids (B, T)`` at positions ``start ..``; with caches, also the new caches."""
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        new_caches = []
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x, cache = block(x, cache)
            new_caches.append(cache)
        return self.head(self.final_norm(x)), (new_caches if caches is not None else None)

    def _start(self, prompt: Tensor) -> Tuple[Tensor, _DecodeState]:
        """Prime one KV cache per block with the last ``context`` prompt characters."""
        window = prompt[:, -self.context:]
        empty = [block.attn.empty_cache(window.shape[0]) for block in self.blocks]
        logits, caches = self._run(window, 0, empty)
        return logits[:, -1], _DecodeState(window, caches)

    def _step(self, token: Tensor, state: _DecodeState) -> Tuple[Tensor, _DecodeState]:
        """Decode one character: incrementally from the caches while the text fits the context,
        afterwards by re-running the last ``context`` characters (positions are absolute, so a
        sliding window cannot reuse cached keys)."""
        tokens = torch.cat([state.tokens, token[:, None]], dim=1)
        if state.caches is not None and tokens.shape[1] <= self.context:
            logits, caches = self._run(token[:, None], tokens.shape[1] - 1, state.caches)
            return logits[:, -1], _DecodeState(tokens, caches)
        window = tokens[:, -self.context:]
        return self._run(window, 0, None)[0][:, -1], _DecodeState(window, None)


# ---- the LSTM baseline ----------------------------------------------------------------------------------

class CharLSTM(CharLanguageModel):
    """Baseline: embedding ``(V, E)`` -> ``num_layers`` LSTM of width ``hidden_size`` -> linear head.

    ``forward(ids (B, T)) -> logits (B, T, V)`` for any ``T``; causal by construction (the LSTM
    reads left to right). Generation carries the LSTM state, so it conditions on the whole text.
    """

    def __init__(self, vocab_size: int = 128, embed_dim: int = 64, hidden_size: int = 128, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        where = type(self).__name__
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            check_positive_int(where, name, value, "a small baseline uses e.g. embed_dim=64, hidden_size=128")
        check_dropout(where, dropout)
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        # torch applies LSTM dropout between layers only
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long -> logits ``(B, T, V)``."""
        out, _ = self.lstm(self.embedding(self._check_ids(ids, "ids")))
        return self.head(out)

    def _start(self, prompt: Tensor) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        return self._read(prompt, None)

    def _step(self, token: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        return self._read(token[:, None], state)

    def _read(self, ids: Tensor, state: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """Feed ``ids (B, T)`` from LSTM ``state`` (None: zeros); next-character logits ``(B, V)`` and the state."""
        out, state = self.lstm(self.embedding(ids), state)
        return self.head(out[:, -1]), state


def lstm_parameter_count(vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int) -> int:
    """Parameters of :class:`CharLSTM`: embedding, LSTM (4 gates, two bias vectors) and head."""
    first = 4 * hidden_size * (embed_dim + hidden_size + 2)
    later = 4 * hidden_size * (2 * hidden_size + 2) * (num_layers - 1)
    return vocab_size * embed_dim + first + later + (hidden_size + 1) * vocab_size


def matched_lstm_hidden(target_params: int, vocab_size: int, embed_dim: int, num_layers: int) -> int:
    """The ``hidden_size`` whose :class:`CharLSTM` parameter count is closest to ``target_params``."""
    def gap(hidden: int) -> int:
        return abs(lstm_parameter_count(vocab_size, embed_dim, hidden, num_layers) - target_params)
    hidden = 1
    while gap(hidden + 1) <= gap(hidden):  # the count grows monotonically with hidden
        hidden += 1
    return hidden


def build_char_lm(**kw) -> CharTransformerLM:
    """``create_model("char_lm", **kw)``: :class:`CharTransformerLM` (defaults ~117k parameters)."""
    return CharTransformerLM(**kw)


def build_char_lstm(**kw) -> CharLSTM:
    """``create_model("char_lstm", **kw)``: :class:`CharLSTM` (defaults ~124k parameters)."""
    return CharLSTM(**kw)
