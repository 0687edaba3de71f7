"""Rows whose lse float32 cannot hold exactly (every key carrying an additive -1e9): the CPU backward
renormalises them from a rerun of the forward, so its gradients are those of the same formula in float32.

Before the fix the backward recomputed P = exp(s - lse) from the rounded lse; with scores tied at
-1e9 (ulp 64) each tied key got P = 1, and the gradients of those rows were scaled by the number of
tied keys (by up to e^32 in general)."""
import pytest
import torch

import tempattn

pytestmark = pytest.mark.skipif(not tempattn.backends()["cpu"]["available"], reason="the C++ extension is not built")

B, H, T, D, PADDED = 1, 2, 130, 16, 64


def _inputs(bias: float):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    k[:, :, :PADDED] = 0.0  # the padded keys tie exactly: every score of rows 0..63 is the bias itself
    key_bias = torch.zeros(B, H, T)
    key_bias[:, :, :PADDED] = bias
    params = {"masked_sdpa": {}, "relpos_attention": {"rel_bias": torch.randn(H, 9), "window": 8},
              "decay_attention": {"log_gamma": -torch.rand(H, 3), "alpha_logits": torch.randn(H, 3)}}
    return q, k, v, key_bias, params


def _gradients(op: str, bias: float, backend: str):
    q, k, v, key_bias, params = _inputs(bias)
    leaves = [q, k, v, key_bias] + [p for p in params[op].values() if isinstance(p, torch.Tensor)]
    for t in leaves:
        t.requires_grad_(True)
    kwargs = dict(params[op], key_bias=key_bias, backend=backend)
    if op == "masked_sdpa":
        kwargs["causal"] = True
    out = getattr(tempattn, op)(q, k, v, **kwargs)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return torch.autograd.grad((out * weights).sum(), leaves)


@pytest.mark.parametrize("bias", [-1e4, -1e9])
@pytest.mark.parametrize("op", ["masked_sdpa", "relpos_attention", "decay_attention"])
def test_gradients_of_rows_with_every_key_biased_match_the_float32_formula(op, bias):
    fused = _gradients(op, bias, "cpu")
    formula = _gradients(op, bias, "reference")
    for name, got, want in zip(["q", "k", "v", "key_bias", "param", "param"], fused, formula):
        scale = want.abs().max().item() + 1.0
        assert (got - want).abs().max().item() <= 2e-3 * scale, (name, (got - want).abs().max().item(), scale)
