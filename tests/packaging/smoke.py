"""Smoke test of an installed tempattn, run from outside the checkout by package_check.py.

Checks that tempattn imports from site-packages (not a checkout), that backends() reports the CPU
kernels and their ISA level (TEMPATTN_CPU_CAPABILITY when set), and that the three operators
(forward and backward, against the reference backend) and the layers run. Prints one JSON line:
{"capability": ..., "capabilities": [...], "file": ...}. Needs only torch (and numpy).
"""
import json
import os
import sys

import torch

import tempattn
from tempattn import nn as tnn


def check(condition, message):
    if not condition:
        sys.exit(f"smoke test failed: {message}")


def close(a, b, tol):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def ops_against_reference():
    torch.manual_seed(0)
    B, H, T, D, W = 2, 3, 70, 16, 8
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64) for _ in range(3))
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 60:] = True
    rel_bias = torch.randn(H, W + 1, dtype=torch.float64)
    log_gamma = -torch.rand(H, 3, dtype=torch.float64)
    alpha_logits = torch.randn(H, 3, dtype=torch.float64)
    calls = {
        "masked_sdpa": lambda x, backend: tempattn.masked_sdpa(*x[:3], key_padding_mask=pad, causal=True,
                                                               backend=backend),
        "relpos_attention": lambda x, backend: tempattn.relpos_attention(*x[:3], x[3], window=W,
                                                                         key_padding_mask=pad, backend=backend),
        "decay_attention": lambda x, backend: tempattn.decay_attention(*x[:3], x[4], x[5], backend=backend),
    }
    for name, call in calls.items():
        results = {}
        for backend in ("cpu", "reference"):
            inputs = [t.clone().requires_grad_(True) for t in (q, k, v, rel_bias, log_gamma, alpha_logits)]
            out = call(inputs, backend)
            out.square().sum().backward()
            results[backend] = [out.detach()] + [t.grad for t in inputs if t.grad is not None]
        for got, want in zip(results["cpu"], results["reference"]):
            check(close(got, want, 1e-9), f"{name}: backend='cpu' differs from the reference")
        # float32 through the same kernels (the vectorised paths differ most between ISA levels)
        out32 = call([t.float() for t in (q, k, v, rel_bias, log_gamma, alpha_logits)], "cpu")
        check(close(out32.double(), results["reference"][0], 1e-4), f"{name}: float32 differs from the reference")


def layers():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 32)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[0, 10:] = True
    mha = tnn.MultiheadAttention(32, 4, batch_first=True)
    torch_mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    torch_mha.load_state_dict(mha.state_dict())
    out, _ = mha(x, x, x, key_padding_mask=pad, need_weights=False)
    want, _ = torch_mha(x, x, x, key_padding_mask=pad, need_weights=False)
    check(close(out, want, 1e-4), "nn.MultiheadAttention differs from torch.nn.MultiheadAttention")
    rel = tnn.RelativeTemporalAttention(32, 4, window=5)
    decay = tnn.MultiScaleDecayAttention(32, 4)
    for layer in (rel, decay):
        y = layer(x)
        y = y[0] if isinstance(y, tuple) else y
        check(y.shape == x.shape and torch.isfinite(y).all(), f"{type(layer).__name__}: bad output")
        y.sum().backward()


def main():
    status = tempattn.backends()
    cpu = status["cpu"]
    check(cpu["available"], f"backend 'cpu' unavailable: {cpu['reason']}")
    check(cpu["capability"] in cpu["capabilities"], f"capability {cpu['capability']} not in {cpu['capabilities']}")
    forced = os.environ.get("TEMPATTN_CPU_CAPABILITY")
    if forced:
        check(cpu["capability"] == forced, f"TEMPATTN_CPU_CAPABILITY={forced} but the kernels run at {cpu['capability']}")
    ops_against_reference()
    layers()
    print(json.dumps({"capability": cpu["capability"], "capabilities": cpu["capabilities"],
                      "file": tempattn.__file__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
