"""A small case of each operator, forward and backward, on backend "cuda": the workload that
.ci/gpu-check runs under `compute-sanitizer --tool memcheck` and `--tool racecheck`.

Covers every kernel family (SIMT float32, tensor-core float16 / bfloat16 forward and backward, the
dK/dV and dQ passes, the row-norm prepass), shapes of several 64-key blocks that are not multiples of
any tile, padding, key bias, dropout, windows and timestamps, a head dim per bucket, and a non-finite
value of V (the tensor-core forward's fallback path and the backward's exact SIMT redo).
"""
import torch

import tempattn


def _run(op, dtype, D, Dv, Tq=77, Tk=139):
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H = 2, 3
    q = torch.randn(B, H, Tq, D, device="cuda", dtype=dtype, generator=g, requires_grad=True)
    k = torch.randn(B, H, Tk, D, device="cuda", dtype=dtype, generator=g, requires_grad=True)
    v = torch.randn(B, H, Tk, Dv, device="cuda", dtype=dtype, generator=g)
    v[0, 0, 5, 0] = float("nan")
    v.requires_grad_(True)
    pad = torch.rand(B, Tk, device="cuda", generator=g) < 0.2
    bias = torch.randn(B, Tk, device="cuda", generator=g, requires_grad=True)
    kw = dict(key_padding_mask=pad, key_bias=bias, dropout_p=0.1, seed=7, backend="cuda")
    if op == "masked_sdpa":
        out = tempattn.masked_sdpa(q, k, v, causal=True, **kw)
    elif op == "relpos_attention":
        rel = torch.randn(H, 6, device="cuda", requires_grad=True)
        out = tempattn.relpos_attention(q, k, v, rel, window=5, **kw)
    else:
        lg = torch.log(torch.rand(H, 3, device="cuda", generator=g) * 0.4 + 0.5).requires_grad_(True)
        al = torch.randn(H, 3, device="cuda", generator=g, requires_grad=True)
        times = torch.cumsum(torch.rand(B, Tk, device="cuda", generator=g), 1)
        out = tempattn.decay_attention(q, k, v, lg, al, times=times, window=20, **kw)
    out.float().nan_to_num().sum().backward()
    torch.cuda.synchronize()


def main():
    for op in ("masked_sdpa", "relpos_attention", "decay_attention"):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for D, Dv in ((64, 48), (128, 128), (200, 256)):
                _run(op, dtype, D, Dv)
    print("cuda_sanitize: ran every operator, dtype and head-dim bucket forward and backward")


if __name__ == "__main__":
    main()
