"""``char_lm``: a causal self-attention character language model, and the ``char_lstm`` baseline.

Architecture. Ids ``x (B, T)``, ``T <= context``, are embedded as
``h_0 = E_tok[x_t] + E_pos[t]`` ``(B, T, E)``. Each of ``L`` pre-norm blocks computes
``h <- h + Attn(LN(h))`` and ``h <- h + MLP(LN(h))`` (GELU, width ``4E``). ``Attn`` is causal
multi-head self-attention, one :func:`tempattn.masked_sdpa` call with ``causal=True``:
``out_i = Σ_{j<=i} softmax_j(q_i·k_j / sqrt(D)) v_j``; in training mode the operator drops
attention *probabilities* (after the softmax) with probability ``dropout``, scaling kept
ones by ``1/(1-p)``, with a Philox mask drawn from torch's generator. A final LayerNorm and a
linear head (tied to ``E_tok`` by default) give logits ``(B, T, V)``; the loss is the
cross-entropy of position ``t`` against ``x_{t+1}``.

Leak-freedom: the only operation mixing positions is the causal attention, which admits keys
``j <= i`` only (the dropout mask of element ``(b, h, i, j)`` depends on its indices and the
seed, not on the data). So the logits at ``t`` are a function of ``x_{<=t}``: changing later
characters leaves them bit-identical, changing an earlier one changes them. The LSTM reads
left to right and is causal by construction.

Generation (:meth:`CharLanguageModel.generate`): sample each character from
``softmax(filter(logits / temperature))`` where the filter keeps the ``top_k`` largest logits
and then the nucleus — the smallest set of most likely characters with mass ``>= top_p`` —
drawing with a given ``torch.Generator`` (deterministic). The transformer decodes
incrementally with one :class:`tempattn.nn.KVCache` per block while the text fits in
``context``; past it, learned absolute positions shift, so it re-runs the last ``context``
characters for each new one. The LSTM carries its ``(h, c)`` state.

Data (:mod:`.data`): an order-2 Markov source with a known entropy rate (the best achievable
validation loss) for tests; Alice in Wonderland and Shakespeare, split contiguously. Metrics
(:mod:`.train`): validation loss in nats/char, perplexity ``exp(loss)``, bits/char ``loss/ln 2``,
against the unigram baseline.
"""
from .model import (CharLanguageModel, CharLSTM, CharTransformerLM, TransformerBlock,
                    build_char_lm, build_char_lstm, filter_logits, next_token_probs, sample_next)

__all__ = ["build_char_lm", "build_char_lstm", "CharTransformerLM", "CharLSTM", "CharLanguageModel",
           "TransformerBlock", "filter_logits", "next_token_probs", "sample_next"]
