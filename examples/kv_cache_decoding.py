"""Incremental decoding with a key/value cache.

tempattn places query row ``i`` at position ``i + Tk - Tq`` (bottom-right alignment), so new
queries scored against cached keys plus their own are exactly the last rows of full causal
attention: no offset argument, no special decoding kernel. This example shows it at three levels:

1. the operator: one query against a cache of keys equals the last row of the full attention;
2. the layers: ``CausalSelfAttention``, ``RelativeTemporalAttention`` (whose cache keeps only the
   last ``window`` steps: O(W) memory however long the sequence) and ``MultiScaleDecayAttention``
   with timestamps, each decoded step by step and compared with one full forward;
3. a tiny language model generating greedily, once with caches and once recomputing everything.

Run: ``python examples/kv_cache_decoding.py`` (a few seconds on a CPU).
"""
import torch
from torch import nn

import tempattn
from tempattn import nn as tnn

B, T, E, H = 2, 10, 32, 4


def operator_level():
    q, k, v = (torch.randn(B, H, T, E // H) for _ in range(3))
    full = tempattn.masked_sdpa(q, k, v, causal=True)
    for t in range(1, T + 1):  # at step t the cache holds keys 0..t-1 (the new one included)
        step = tempattn.masked_sdpa(q[:, :, t - 1:t], k[:, :, :t], v[:, :, :t], causal=True)
        torch.testing.assert_close(step, full[:, :, t - 1:t])
    # Several new queries at once (chunked prefill) work the same way.
    chunk = tempattn.masked_sdpa(q[:, :, 6:], k, v, causal=True)
    torch.testing.assert_close(chunk, full[:, :, 6:])
    print("operator: cached steps == full causal attention")


def decode_step_by_step(layer, x, **per_step):
    """Feed ``x (B, T, E)`` one step at a time through ``layer`` with a cache; return (B, T, E) and the cache."""
    cache, outs = layer.empty_cache(batch_size=x.shape[0]), []
    for t in range(x.shape[1]):
        kwargs = {name: value[:, t:t + 1] for name, value in per_step.items()}
        y, cache = layer(x[:, t:t + 1], cache=cache, **kwargs)
        outs.append(y)
    return torch.cat(outs, dim=1), cache


@torch.no_grad()
def layer_level():
    x = torch.randn(B, T, E)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, 3] = True                      # a missing step in the middle of sequence 1

    causal = tnn.CausalSelfAttention(E, H).eval()
    steps, cache = decode_step_by_step(causal, x, key_padding_mask=padding)
    torch.testing.assert_close(steps, causal(x, key_padding_mask=padding))
    print(f"CausalSelfAttention: {cache.length} cached steps (all of them)")

    window = 3
    rel = tnn.RelativeTemporalAttention(E, H, window=window, n_categories=4).eval()
    categories = torch.randint(0, 4, (B, T))
    steps, cache = decode_step_by_step(rel, x, categories=categories)
    torch.testing.assert_close(steps, rel(x, categories=categories))
    print(f"RelativeTemporalAttention(window={window}): {cache.length} cached steps, bounded by the window")
    assert cache.length == window

    decay = tnn.MultiScaleDecayAttention(E, H).eval()
    times = torch.cumsum(torch.rand(B, T, dtype=torch.float64) * 2, dim=1)   # irregular timestamps
    steps, cache = decode_step_by_step(decay, x, times=times)
    torch.testing.assert_close(steps, decay(x, times=times))
    print(f"MultiScaleDecayAttention with times: {cache.length} cached steps and their timestamps")


class TinyLM(nn.Module):
    """Embedding, two pre-norm blocks of CausalSelfAttention + MLP, a linear head."""

    def __init__(self, vocab: int = 20, context: int = 32):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, E), nn.Embedding(context, E)
        self.blocks = nn.ModuleList(tnn.CausalSelfAttention(E, H) for _ in range(2))
        self.mlps = nn.ModuleList(nn.Sequential(nn.LayerNorm(E), nn.Linear(E, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
                                  for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(E) for _ in range(2))
        self.head = nn.Linear(E, vocab)

    def forward(self, ids, start: int = 0, caches=None):
        """Logits for ``ids`` at positions ``start..``; with ``caches`` (one per block) also the new caches."""
        h = self.tok(ids) + self.pos(torch.arange(start, start + ids.shape[1]))
        new_caches = []
        for i, (attn, norm, mlp) in enumerate(zip(self.blocks, self.norms, self.mlps)):
            if caches is None:
                h = h + attn(norm(h))
            else:
                a, cache = attn(norm(h), cache=caches[i])
                h = h + a
                new_caches.append(cache)
            h = h + mlp(h)
        return self.head(h) if caches is None else (self.head(h), new_caches)


@torch.no_grad()
def generation():
    torch.manual_seed(0)
    lm = TinyLM().eval()
    prompt = torch.randint(0, 20, (B, 4))

    # Without a cache: re-run the whole sequence for every new token (O(T²) work per token).
    ids = prompt
    for _ in range(12):
        next_id = lm(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    recomputed = ids

    # With caches: the prompt once, then one position per step.
    caches = [block.empty_cache(batch_size=B) for block in lm.blocks]
    logits, caches = lm(prompt, 0, caches)
    ids = prompt
    for _ in range(12):
        next_id = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        logits, caches = lm(next_id, ids.shape[1] - 1, caches)
    assert torch.equal(ids, recomputed)
    print(f"generation: cached and recomputed decoding agree on all {ids.shape[1]} tokens")


def main():
    torch.manual_seed(0)
    operator_level()
    layer_level()
    generation()
    print("ok")


if __name__ == "__main__":
    main()
