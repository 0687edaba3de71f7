"""tempattn.nn.CausalSelfAttention: dense float64 oracle, padding, cached decoding, errors."""
import math

import pytest
import torch

from tempattn import nn as tnn

B, T, E, H = 2, 11, 12, 3


def dense_oracle(layer, x, key_padding_mask=None):
    """softmax(q k^T / sqrt(D) masked causal + padding) v, projected; empty rows give 0."""
    D = E // H
    q, k, v = (t.view(B, -1, H, D).transpose(1, 2) for t in torch.nn.functional.linear(
        x, layer.in_proj.weight, layer.in_proj.bias).chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    probs = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1).nan_to_num(0.0)
    out = (probs @ v).transpose(1, 2).reshape(B, T, E)
    return layer.out_proj(out)


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return tnn.CausalSelfAttention(E, H, backend="cpu").double().eval()


def padding():
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 3] = mask[1, 7:] = True
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_matches_dense_oracle(layer, masked):
    x = torch.randn(B, T, E, dtype=torch.float64)
    mask = padding() if masked else None
    torch.testing.assert_close(layer(x, key_padding_mask=mask), dense_oracle(layer, x, mask), rtol=1e-10, atol=1e-12)


def test_padded_steps_do_not_reach_other_rows(layer):
    x = torch.randn(B, T, E, dtype=torch.float64)
    mask = padding()
    changed = x.clone()
    changed[mask] = torch.randn(int(mask.sum()), E, dtype=torch.float64) * 100
    keep = ~mask
    assert torch.equal(layer(x, key_padding_mask=mask)[keep], layer(changed, key_padding_mask=mask)[keep])
    assert not torch.equal(layer(x)[keep], layer(changed)[keep])


@pytest.mark.parametrize("chunks", [[1] * T, [4, 1, 6]], ids=["steps", "chunks"])
def test_cached_decoding_equals_full_forward(layer, chunks):
    x = torch.randn(B, T, E, dtype=torch.float64)
    mask = padding()
    full = layer(x, key_padding_mask=mask)
    cache, outputs, start = layer.empty_cache(B), [], 0
    for size in chunks:
        y, cache = layer(x[:, start:start + size], key_padding_mask=mask[:, start:start + size], cache=cache)
        outputs.append(y)
        start += size
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, rtol=1e-10, atol=1e-12)
    assert cache.k.shape[2] == T


def test_dropout_only_in_training_and_reproducible_by_seed():
    torch.manual_seed(1)
    layer = tnn.CausalSelfAttention(E, H, dropout=0.5, backend="cpu")
    x = torch.randn(B, T, E)
    assert not torch.equal(layer(x, seed=1), layer(x, seed=2))
    assert torch.equal(layer(x, seed=3), layer(x, seed=3))
    layer.eval()
    assert torch.equal(layer(x, seed=1), layer(x, seed=2))


@pytest.mark.parametrize("build,call,exc,words", [
    (lambda: tnn.CausalSelfAttention(8, 3), None, ValueError, ["num_heads", "divisor of embed_dim = 8"]),
    (lambda: tnn.CausalSelfAttention(8, 2, dropout=1.0), None, ValueError, ["dropout"]),
    (lambda: tnn.CausalSelfAttention(8, 2), lambda m: m(torch.randn(2, 5, 6)), ValueError, ["x", "8"]),
    (lambda: tnn.CausalSelfAttention(8, 2), lambda m: m(torch.randn(2, 5, 8), key_padding_mask=torch.zeros(2, 5)),
     TypeError, ["key_padding_mask", "bool"]),
])
def test_bad_arguments_name_the_argument(build, call, exc, words):
    with pytest.raises(exc) as info:
        call(build()) if call is not None else build()
    for word in words:
        assert word in str(info.value)
