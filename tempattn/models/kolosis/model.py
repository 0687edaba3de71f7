"""Kolosis: a causal language model whose blocks fuse concept, semantic and temporal streams.

Shapes: ``B`` batch, ``T`` sequence length (``<= context``), ``E`` width, ``H`` heads, ``K``
concepts, ``S`` streams, ``L`` blocks, ``V`` vocabulary.
"""
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...nn import DecayStats, MultiheadAttention, MultiScaleDecayAttention, RelativeTemporalAttention
from ...nn._heads import fail
from ...ops.common.validation import value_checks_enabled

__all__ = ["STREAMS", "BASELINE_STREAMS", "PLAIN_STREAMS", "STREAM_KINDS", "POSITIONS", "DEFAULT_SCALES", "FUSIONS",
           "ConceptStream", "SemanticStream", "TemporalStream", "KolosisBlock", "KolosisLM"]

STREAMS = ("concept", "semantic", "temporal")
BASELINE_STREAMS = ("concept", "semantic")
PLAIN_STREAMS = ("concept", "semantic", "plain")
"""The control with an equal-size third stream of plain causal attention (no decay) in the temporal one's place."""
STREAM_KINDS = STREAMS + ("plain",)
"""Every stream name, in the canonical order: ``"plain"`` is a second semantic stream (plain attention)."""
POSITIONS = ("absolute", "relative")
DEFAULT_SCALES = ((0.6, 0.9), (0.85, 1.0), (0.95, 1.0))
"""γ ranges of the temporal stream: fast, medium, slow (the MultiScaleDecayAttention defaults)."""
FUSIONS = ("global", "layer")


class ConceptStream(nn.Module):
    """Tokens as soft mixtures of ``K`` learned concept prototypes, then causal attention over them.

    ``a_t = softmax_k(q_t · P_k / sqrt(E))`` with ``q_t = W u_t``; ``c_t = Σ_k a_tk P_k``; the
    output is causal multi-head attention over ``c``. The assignment of step ``t`` reads ``u_t``
    only, so the stream is causal.
    """

    def __init__(self, embed_dim: int, num_heads: int, n_concepts: int, dropout: float, backend: str,
                 relative_window: Optional[int] = None) -> None:
        super().__init__()
        self.query = nn.Linear(embed_dim, embed_dim)
        self.prototypes = nn.Parameter(torch.randn(n_concepts, embed_dim))
        self.attention = _causal_attention(embed_dim, num_heads, dropout, backend, relative_window)

    def assignment(self, u: Tensor) -> Tensor:
        """``u (B, T, E)`` -> soft assignment ``(B, T, K)`` (rows sum to 1)."""
        scores = self.query(u) @ self.prototypes.t() / math.sqrt(u.shape[-1])
        return torch.softmax(scores, dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        """``u (B, T, E)`` -> ``(B, T, E)``."""
        concepts = self.assignment(u) @ self.prototypes
        return _attend(self.attention, concepts)


class SemanticStream(nn.Module):
    """Standard causal multi-head self-attention over the token representations (``masked_sdpa``), or with
    ``relative_window`` a learned relative-position bias over that many steps back (``relpos_attention``)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, backend: str,
                 relative_window: Optional[int] = None) -> None:
        super().__init__()
        self.attention = _causal_attention(embed_dim, num_heads, dropout, backend, relative_window)

    def forward(self, u: Tensor) -> Tensor:
        """``u (B, T, E)`` -> ``(B, T, E)``."""
        return _attend(self.attention, u)


def _causal_attention(embed_dim: int, num_heads: int, dropout: float, backend: str,
                      relative_window: Optional[int]) -> nn.Module:
    """Plain causal multi-head attention, or (``relative_window`` given) T5-style attention with a learned
    per-head bias for each distance ``0 .. relative_window`` (zero at init)."""
    if relative_window is None:
        return MultiheadAttention(embed_dim, num_heads, dropout, batch_first=True, backend=backend)
    layer = RelativeTemporalAttention(embed_dim, num_heads, relative_window, dropout=dropout, backend=backend)
    layer.check_inputs = False  # its input is the model's own (B, T, E) activation
    return layer


def _attend(attention: nn.Module, u: Tensor) -> Tensor:
    """Causal self-attention of ``u (B, T, E)`` with a layer made by :func:`_causal_attention`."""
    if isinstance(attention, MultiheadAttention):
        return attention(u, u, u, need_weights=False, is_causal=True)[0]
    return attention(u)


class TemporalStream(nn.Module):
    """Causal self-attention with a learned per-head mixture of exponential decays (``decay_attention``)."""

    def __init__(self, embed_dim: int, num_heads: int, scales: Sequence[Tuple[float, float]], dropout: float,
                 backend: str) -> None:
        super().__init__()
        self.attention = MultiScaleDecayAttention(embed_dim, num_heads, scales, dropout, backend=backend)
        self.attention.check_inputs = False  # its input is the model's own (B, T, E) activation

    def forward(self, u: Tensor) -> Tensor:
        """``u (B, T, E)`` -> ``(B, T, E)``."""
        return self.attention(u)


class KolosisBlock(nn.Module):
    """Pre-norm block: ``x += W_f Σ_s π_s · norm(stream_s(LN(x)))``, then ``x += MLP(LN(x))``.

    Each stream output is normalised (LayerNorm without gain) before fusion, so the fusion
    weight ``π_s`` is the share stream ``s`` has in the fused input of ``W_f`` — the streams
    cannot rescale themselves around it.
    """

    def __init__(self, streams: Dict[str, nn.Module], embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.streams = nn.ModuleDict(streams)
        self.stream_norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.fuse = nn.Linear(embed_dim, embed_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(),
                                 nn.Linear(4 * embed_dim, embed_dim), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """``x (B, T, E)``, fusion ``weights (S,)`` -> ``(B, T, E)``."""
        u = self.norm(x)
        outputs = torch.stack([self.stream_norm(stream(u)) for stream in self.streams.values()])  # (S, B, T, E)
        fused = torch.einsum("s,sbte->bte", weights, outputs)
        x = x + self.dropout(self.fuse(fused))
        return x + self.mlp(x)


def _fail(name: str, expected: str, got, hint: str, exc=ValueError):
    fail("KolosisLM", name, expected, repr(got), hint, exc)


def _check_int(name: str, value, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, f"an int >= {minimum}", value, hint, TypeError)
    if value < minimum:
        _fail(name, f"an int >= {minimum}", value, hint)


def _check_streams(streams) -> Tuple[str, ...]:
    hint = f"a non-empty subset of {STREAM_KINDS} without repeats, e.g. {BASELINE_STREAMS} for the baseline"
    if isinstance(streams, str) or not isinstance(streams, (tuple, list)):
        _fail("streams", "a tuple of stream names", streams, hint, TypeError)
    if not streams or len(set(streams)) != len(streams) or not set(streams) <= set(STREAM_KINDS):
        _fail("streams", f"a non-empty subset of {STREAM_KINDS}", streams, hint)
    return tuple(s for s in STREAM_KINDS if s in streams)  # canonical order, so weights line up with names


class KolosisLM(nn.Module):
    """Three-stream causal language model (see the package docstring).

    Args:
        vocab_size: ``V`` tokens.
        context: the longest input ``T`` (size of the learned position table).
        embed_dim: ``E``; num_heads: ``H`` (divides ``E``), used by every stream.
        num_layers: ``L`` blocks.
        n_concepts: ``K`` concept prototypes of the concept stream.
        streams: which of ``("concept", "semantic", "temporal", "plain")`` to run (canonical order kept);
            ``"plain"`` is one more plain causal attention stream of the same size as the temporal one.
        scales: γ ranges of the temporal stream (default :data:`DEFAULT_SCALES`); only with it.
        positions: ``"absolute"`` (the learned position table only) or ``"relative"``: the concept,
            semantic and plain streams' attentions also add a learned per-head bias for each distance
            ``0 .. context - 1`` (T5-style relative positions, ``relpos_attention``, zero at init).
        fusion: ``"global"`` (one logit vector ``(S,)`` shared by all blocks) or ``"layer"`` (``(L, S)``).
        dropout: attention, fusion and MLP dropout in training.
        backend: the tempattn operator backend for every attention layer.

    ``forward(ids (B, T) long) -> logits (B, T, V)``: logits at ``t`` predict token ``t + 1`` and
    depend on ``ids[:, :t + 1]`` only.
    """

    def __init__(self, vocab_size: int = 128, *, context: int = 128, embed_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 2, n_concepts: int = 16, streams: Sequence[str] = STREAMS,
                 scales: Optional[Sequence[Tuple[float, float]]] = None, fusion: str = "global",
                 positions: str = "absolute", dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        _check_int("vocab_size", vocab_size, 1, "the number of distinct tokens, e.g. CharVocab.size")
        _check_int("context", context, 1, "the longest sequence the model reads, e.g. 128")
        _check_int("embed_dim", embed_dim, 1, "the model width, e.g. 64")
        _check_int("num_heads", num_heads, 1, "e.g. 4")
        if embed_dim % num_heads:
            _fail("num_heads", f"a divisor of embed_dim = {embed_dim}", num_heads, "e.g. num_heads=4 with embed_dim=64")
        _check_int("num_layers", num_layers, 1, "the number of fused blocks, e.g. 2")
        _check_int("n_concepts", n_concepts, 1, "the number of concept prototypes, e.g. 16")
        self.stream_names = _check_streams(streams)
        if scales is not None and "temporal" not in self.stream_names:
            _fail("scales", "None without the temporal stream", scales, "γ ranges configure the temporal stream only")
        if fusion not in FUSIONS:
            _fail("fusion", f"one of {FUSIONS}", fusion, "'global' shares one weight vector across blocks")
        if positions not in POSITIONS:
            _fail("positions", f"one of {POSITIONS}", positions, "'relative' adds a learned bias per distance")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            _fail("dropout", "a float in [0, 1)", dropout, "e.g. 0.1; 0 disables it")
        self.vocab_size, self.context = vocab_size, context
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(context, embed_dim)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        relative_window = context - 1 if positions == "relative" else None
        make = self._stream_factory(embed_dim, num_heads, n_concepts, scales or DEFAULT_SCALES, dropout, backend,
                                    relative_window)
        self.blocks = nn.ModuleList(KolosisBlock({name: make[name]() for name in self.stream_names}, embed_dim,
                                                 dropout) for _ in range(num_layers))
        shape = (len(self.stream_names),) if fusion == "global" else (num_layers, len(self.stream_names))
        self.fusion_logits = nn.Parameter(torch.zeros(shape))  # even fusion at init
        self.fusion, self.positions = fusion, positions
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size)

    @staticmethod
    def _stream_factory(embed_dim: int, num_heads: int, n_concepts: int, scales, dropout: float, backend: str,
                        relative_window: Optional[int]) -> Dict[str, Callable[[], nn.Module]]:
        return {
            "concept": lambda: ConceptStream(embed_dim, num_heads, n_concepts, dropout, backend, relative_window),
            "semantic": lambda: SemanticStream(embed_dim, num_heads, dropout, backend, relative_window),
            "temporal": lambda: TemporalStream(embed_dim, num_heads, scales, dropout, backend),
            "plain": lambda: SemanticStream(embed_dim, num_heads, dropout, backend, relative_window),
        }

    def _check_ids(self, ids) -> None:
        if not isinstance(ids, Tensor) or ids.dtype != torch.long:
            _fail("ids", "a long tensor of shape (B, T)", ids if not isinstance(ids, Tensor) else ids.dtype,
                  "token ids, e.g. CharVocab.encode(text)[None]", TypeError)
        if ids.dim() != 2 or not 1 <= ids.shape[1] <= self.context:
            _fail("ids", f"of shape (B, T) with 1 <= T <= context = {self.context}", tuple(ids.shape),
                  "split longer text into windows of at most `context` tokens")
        if not (ids.numel() and value_checks_enabled(ids)):
            return
        low, high = torch.aminmax(ids)  # one pass
        low, high = int(low), int(high)
        if low < 0 or high >= self.vocab_size:
            _fail("ids", f"in [0, vocab_size) = [0, {self.vocab_size})", f"values in [{low}, {high}]",
                  "encode with the vocabulary the model was built for")

    def _block_weights(self) -> Tensor:
        """``(L, S)`` differentiable fusion weights, one row per block."""
        weights = torch.softmax(self.fusion_logits, dim=-1)
        return weights.expand(len(self.blocks), -1) if self.fusion == "global" else weights

    def fusion_weights(self) -> Tensor:
        """Detached softmax fusion weights: ``(S,)`` for ``"global"`` fusion, ``(L, S)`` for ``"layer"``."""
        return torch.softmax(self.fusion_logits.detach(), dim=-1)

    def decay_stats(self) -> Optional[DecayStats]:
        """The temporal streams' γ and α stacked over blocks, each ``(L, H, S_scales)``; None without them."""
        if "temporal" not in self.stream_names:
            return None
        stats = [block.streams["temporal"].attention.decay_stats() for block in self.blocks]
        return DecayStats(gamma=torch.stack([s.gamma for s in stats]), alpha=torch.stack([s.alpha for s in stats]))

    def get_attention_weights(self, *inputs, **kwargs) -> Dict[str, Tensor]:
        """Per-head attention weights ``(B, H, Tq, Tk)`` of every attention layer on the forward inputs
        (``ids``), from the dense reference path, keyed by layer name (for monitoring; see
        :func:`tempattn.models.common.attention.get_attention_weights`)."""
        from ..common.attention import get_attention_weights
        return get_attention_weights(self, *inputs, **kwargs)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long -> logits ``(B, T, V)``."""
        self._check_ids(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        for block, weights in zip(self.blocks, self._block_weights()):
            x = block(x, weights)
        return self.head(self.norm(x))
