"""Rows whose float32 lse cannot hold row_max + log(row_sum): every key of rows 0..63 carries an
additive -1e4 / -1e9 and their scores tie exactly. A backward that recomputes P = exp(s - lse) from
the rounded lse gives each tied key P = 1 and scales those rows' gradients by the number of tied keys
(by up to e^32 in general); the fused backends renormalise such rows from a rerun of the forward's row
statistics. Shared by the CPU test (tests/cpu/test_coarse_lse.py) and the CUDA one
(tests/ops/common/test_cuda_backend.py); the tensors are built on the default device."""
import torch

import tempattn

B, H, T, D, PADDED = 1, 2, 130, 16, 64
OPS = ["masked_sdpa", "relpos_attention", "decay_attention"]
BIASES = [-1e4, -1e9]


def _inputs(bias: float):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    k[:, :, :PADDED] = 0.0  # the padded keys tie exactly: every score of rows 0..63 is the bias itself
    key_bias = torch.zeros(B, H, T)
    key_bias[:, :, :PADDED] = bias
    params = {"masked_sdpa": {}, "relpos_attention": {"rel_bias": torch.randn(H, 9), "window": 8},
              "decay_attention": {"log_gamma": -torch.rand(H, 3), "alpha_logits": torch.randn(H, 3)}}
    return q, k, v, key_bias, params


def _gradients(op: str, bias: float, backend: str, dtype=torch.float32):
    """Gradients of q, k, v, key_bias and the score parameters, q, k and v rounded to ``dtype`` and given to the
    operator in ``dtype`` (``backend``'s own) or in float32 (the formula's: the same values)."""
    q, k, v, key_bias, params = _inputs(bias)
    q, k, v = (t.to(dtype) if backend != "reference" else t.to(dtype).float() for t in (q, k, v))
    leaves = [q, k, v, key_bias] + [p for p in params[op].values() if isinstance(p, torch.Tensor)]
    for t in leaves:
        t.requires_grad_(True)
    kwargs = dict(params[op], key_bias=key_bias, backend=backend)
    if op == "masked_sdpa":
        kwargs["causal"] = True
    out = getattr(tempattn, op)(q, k, v, **kwargs)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return torch.autograd.grad((out * weights).sum(), leaves)


def assert_gradients_match_the_float32_formula(op: str, bias: float, backend: str, dtype=torch.float32):
    """``backend``'s gradients with q, k, v in ``dtype`` against the float32 formula on the same values, within
    2e-3 of each gradient's magnitude (float32) or 16x the dtype's epsilon (float16 / bfloat16: its rounded P
    and dS); the flaw this guards against scales whole rows by the number of tied keys (64 here)."""
    fused = _gradients(op, bias, backend, dtype)
    formula = _gradients(op, bias, "reference", dtype)
    rtol = 2e-3 if dtype == torch.float32 else 16 * torch.finfo(dtype).eps
    for name, got, want in zip(["q", "k", "v", "key_bias", "param", "param"], fused, formula):
        scale = want.abs().max().item() + 1.0
        err = (got.float() - want).abs().max().item()
        assert err <= rtol * scale, (name, err, scale)
