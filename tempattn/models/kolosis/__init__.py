"""kolosis: a causal language model with concept, semantic and temporal streams (docs/models.md).

Architecture. Token ids ``(B, T)`` are embedded with a learned position table:
``x⁰ = E_tok[ids] + E_pos[0..T-1]`` ``(B, T, E)``. Each of ``L`` pre-norm blocks reads
``u = LN(x)`` with every stream, each ``(B, T, E) -> (B, T, E)``:

- concept: soft assignment ``a_t = softmax_k(W u_t · P_k / sqrt(E))`` of each token to ``K``
  learned prototypes ``P (K, E)``, concept representation ``c_t = Σ_k a_tk P_k``, then causal
  multi-head attention over ``c`` (:class:`tempattn.nn.MultiheadAttention`, ``masked_sdpa``);
- semantic: standard causal multi-head self-attention over ``u`` (same layer);
- temporal: :class:`tempattn.nn.MultiScaleDecayAttention`: scores
  ``q_i·k_j/sqrt(D) + log Σ_s α_hs γ_hs^(i-j)``, per-head decay rates γ held in ranges by a
  sigmoid (fast 0.6–0.9, medium 0.85–1.0, slow 0.95–1.0), mixing weights ``α = softmax``.

Fusion: ``π = softmax(w)`` with learned logits ``w`` — one vector ``(S,)`` shared by the blocks
(``fusion="global"``, default) or one per block (``"layer"``, ``(L, S)``);
``x += W_f Σ_s π_s · norm(h_s)`` where ``norm`` is a LayerNorm without gain, so ``π_s`` is stream
``s``'s share of the fused input rather than something a stream can rescale around; then
``x += MLP(LN(x))``. The LM head reads ``LN(x)`` and gives logits ``(B, T, V)``.
``kolosis_baseline`` drops the temporal stream (concept + semantic, fused the same way). Two controls
separate the decay bias from the rest: ``kolosis_plain`` puts an equal-size stream of plain causal
attention (no decay) in the temporal stream's place, and ``kolosis_relpos`` is the baseline whose
attentions add a learned per-head bias for each distance (T5-style relative positions, so the two
streams do not start position-blind).
``fusion_weights()`` returns ``π``; ``decay_stats()`` returns γ and α ``(L, H, scales)``
(None for the baseline).

Leak-free: the three attentions are causal (key ``j <= i``), the soft assignment, norms, MLP and
head act on one position at a time and positions enter only through the embedding, so the logits
at ``t`` are a function of ``ids[:, :t+1]`` alone (tested by perturbing later and earlier tokens).

Data (``data.py``): a geometric-lag echo source whose Bayes-optimal predictor is exactly a
decay-weighted average over the history (known optimal loss), the character corpora
``shakespeare``, ``alice`` and ``austen`` (parsed from the ``r-cran-janeaustenr`` R lazy-load
database), each split contiguously. Metrics (``train.py``): NLL in nats per token, perplexity,
bits per token, fusion weights, γ and α per epoch.
"""
from typing import Any

from .model import BASELINE_STREAMS, PLAIN_STREAMS, STREAMS, KolosisLM

__all__ = ["KolosisLM", "build_kolosis", "build_kolosis_baseline", "build_kolosis_plain", "build_kolosis_relpos",
           "STREAMS", "BASELINE_STREAMS", "PLAIN_STREAMS"]


def build_kolosis(**kw: Any) -> KolosisLM:
    """The three-stream model; keyword arguments as :class:`KolosisLM` (small defaults)."""
    return KolosisLM(**kw)


def _fixed(builder: str, kw: dict, fixed: dict) -> KolosisLM:
    """``KolosisLM(**kw, **fixed)``; a ``streams`` / ``scales`` / fixed keyword in ``kw`` is a ValueError."""
    for name in ("streams", "scales", *fixed):
        if name in kw:
            raise ValueError(f"{builder}: `{name}` must not be given (this model fixes {fixed}), got "
                             f"{name}={kw[name]!r}; hint: use build_kolosis({name}=...) for other settings")
    return KolosisLM(**kw, **fixed)


def build_kolosis_baseline(**kw: Any) -> KolosisLM:
    """Kolosis without the temporal stream: concept and semantic streams, fused the same way."""
    return _fixed("build_kolosis_baseline", kw, {"streams": BASELINE_STREAMS})


def build_kolosis_plain(**kw: Any) -> KolosisLM:
    """The control for the decay bias: concept, semantic and a third stream of plain causal attention (no
    decay), the temporal stream's size (its parameters less the 2·H·scales decay parameters)."""
    return _fixed("build_kolosis_plain", kw, {"streams": PLAIN_STREAMS})


def build_kolosis_relpos(**kw: Any) -> KolosisLM:
    """The baseline (concept + semantic) with relative positions: each attention adds a learned per-head bias
    for every distance up to ``context - 1`` (``positions="relative"``)."""
    return _fixed("build_kolosis_relpos", kw, {"streams": BASELINE_STREAMS, "positions": "relative"})
