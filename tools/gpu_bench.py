"""The reduced GPU benchmark grid of `make gpu-check` (.ci/gpu-check runs it; it can run alone too).

    python tools/gpu_bench.py [--budget SECONDS] [--out DIR] [--json FILE] [--ops masked_sdpa,relpos_attention,...]

For each operator (masked_sdpa with a key padding mask, relpos_attention and decay_attention with a
window), bf16, D = 64, T in {1024, 4096, 16384} (B * T = 16384 tokens, H = 16), forward and
forward + backward, it times:

- tempattn on the Triton backend (and on the CUDA backend where this build has it);
- SDPA's backends with the same semantics: the efficient and cuDNN kernels with the same padding mask
  (bool) or the dense (H, T, T) bias (float), the math kernel up to T = 4096;
- torch.compile'd flex_attention with the same score_mod and block_mask (compiled in the warm-up);
- the floor (SDPA flash, causal, no mask) and the bf16 matmul ceiling (TFLOP/s of an 8192^3 GEMM);
- once, the causal forward at T = 8192, D = 128 (B = 2, H = 16) of tempattn and SDPA flash, and of the Triton
  backend with its loop tiles read by pointers instead of TMA on sm_90 (TEMPATTN_TRITON_TMA=0:
  "tempattn-triton-pointers"), the same-run check of the launcher's TMA rule.

The table ends with a verdict per GPU target of the Triton backend (masked_sdpa >= 1.0x the fastest SDPA backend
with the same padding mask, forward and forward + backward; relpos / decay forward + backward >= 1.5x compiled
flex_attention; the causal forward >= 50% of the bf16 matmul's TFLOP/s).

Shapes run smallest first; a shape whose estimated time (the previous shape's, scaled by its FLOPs)
would overrun --budget is dropped with every larger one ("dropped" in the JSON). Every call is checked
for a finite output; a provider that raises is recorded with its error, not fatal.
Writes --json (one file) and prints a short table last.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

OPS = ("masked_sdpa", "relpos_attention", "decay_attention")
TS = (1024, 4096, 16384)
TOKENS, H, D, WINDOW, S = 16384, 16, 64, 256, 3
DTYPE = torch.bfloat16


def _timeit(fn, min_time=0.15, max_iters=50):
    """Median milliseconds of fn() (which synchronises nothing itself), after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


class Problem:
    def __init__(self, op, T, device, grad):
        g = torch.Generator(device=device).manual_seed(0)
        self.op, self.T = op, T
        self.B = max(1, TOKENS // T)
        shape = (self.B, H, T, D)
        self.q, self.k, self.v = (torch.randn(shape, device=device, dtype=DTYPE, generator=g).requires_grad_(grad)
                                  for _ in range(3))
        self.do = torch.randn(shape, device=device, dtype=DTYPE, generator=g)
        lengths = torch.randint(T // 2, T + 1, (self.B,), device=device, generator=g)
        self.valid = torch.arange(T, device=device)[None, :] < lengths[:, None]  # (B, T) True = attended
        self.rel = (0.1 * torch.randn(H, WINDOW + 1, device=device, generator=g)).requires_grad_(grad)
        self.log_gamma = (-torch.rand(H, S, device=device, generator=g)).requires_grad_(grad)
        self.alpha = torch.randn(H, S, device=device, generator=g).requires_grad_(grad)
        self.params = {"masked_sdpa": [], "relpos_attention": [self.rel],
                       "decay_attention": [self.log_gamma, self.alpha]}[op]
        self.scale = 1.0 / math.sqrt(D)

    def flops(self, mode):
        """Attention FLOPs (4 B H T^2 D, halved for causal, banded for a window), x3.5 with the backward."""
        pairs = self.T * self.T if self.op == "masked_sdpa" else min(self.T, WINDOW + 1) * self.T
        return 4 * self.B * H * pairs * D * (3.5 if mode == "fwd+bwd" else 1.0)

    # -- semantics, four ways ---------------------------------------------------------------------
    def tempattn(self, backend):
        import tempattn
        if self.op == "masked_sdpa":
            return lambda: tempattn.masked_sdpa(self.q, self.k, self.v, key_padding_mask=~self.valid, backend=backend)
        if self.op == "relpos_attention":
            return lambda: tempattn.relpos_attention(self.q, self.k, self.v, self.rel, window=WINDOW, backend=backend)
        return lambda: tempattn.decay_attention(self.q, self.k, self.v, self.log_gamma, self.alpha, window=WINDOW,
                                                eps=1e-6, backend=backend)

    def delta(self):
        i = torch.arange(self.T, device=self.q.device)
        return i[:, None] - i[None, :]

    def dense_bias(self):
        """bool (B, 1, 1, T) for masked_sdpa; float (H, T, T) with -inf outside the window otherwise."""
        if self.op == "masked_sdpa":
            return self.valid[:, None, None, :]
        delta = self.delta()
        ok = (delta >= 0) & (delta <= WINDOW)
        if self.op == "relpos_attention":
            bias = self.rel[:, delta.clamp(0, WINDOW)]
        else:
            d = delta.clamp(min=0).float()
            terms = torch.log_softmax(self.alpha, -1)[:, :, None, None] + self.log_gamma[:, :, None, None] * d
            bias = torch.logaddexp(torch.logsumexp(terms, 1), torch.tensor(math.log(1e-6), device=d.device))
        return torch.where(ok, bias, float("-inf")).to(DTYPE)

    def flex_mods(self):
        valid, rel, lg, alpha = self.valid, self.rel, self.log_gamma, self.alpha
        if self.op == "masked_sdpa":
            return None, lambda b, h, q_idx, kv_idx: valid[b, kv_idx]
        window = lambda b, h, q_idx, kv_idx: (q_idx >= kv_idx) & (q_idx - kv_idx <= WINDOW)  # noqa: E731
        if self.op == "relpos_attention":
            return (lambda score, b, h, q_idx, kv_idx: score + rel[h, torch.clamp(q_idx - kv_idx, 0, WINDOW)]), window
        log_a = torch.log_softmax(alpha, -1)
        log_eps = math.log(1e-6)

        def decay(score, b, h, q_idx, kv_idx):
            d = torch.clamp(q_idx - kv_idx, min=0).to(torch.float32)
            t = [log_a[h, s] + lg[h, s] * d for s in range(S)]
            m = torch.maximum(torch.maximum(t[0], t[1]), t[2])
            mix = m + torch.log(sum(torch.exp(x - m) for x in t))
            top = torch.maximum(mix, torch.full_like(mix, log_eps))
            return score + top + torch.log(torch.exp(mix - top) + torch.exp(log_eps - top))
        return decay, window


def _providers(p: Problem, backends):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = {}
    for b in backends:
        out[f"tempattn-{b}"] = p.tempattn(b)
    bias = p.dense_bias()

    def sdpa(kind):
        def run():
            with sdpa_kernel([kind]):
                return F.scaled_dot_product_attention(p.q, p.k, p.v, attn_mask=bias)
        return run
    out["sdpa-efficient"] = sdpa(SDPBackend.EFFICIENT_ATTENTION)
    out["sdpa-cudnn"] = sdpa(SDPBackend.CUDNN_ATTENTION)
    if p.T <= 4096:
        out["sdpa-math"] = sdpa(SDPBackend.MATH)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        torch._dynamo.reset()
        compiled = torch.compile(flex_attention, dynamic=False)
        score_mod, mask_mod = p.flex_mods()
        block_mask = create_block_mask(mask_mod, p.B, None, p.T, p.T, device=p.q.device)
        out["flex"] = lambda: compiled(p.q, p.k, p.v, score_mod=score_mod, block_mask=block_mask)
    except Exception as e:  # noqa: BLE001
        out["flex"] = e

    def floor():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(p.q, p.k, p.v, is_causal=True)
    out["floor-sdpa-flash-causal"] = floor
    return out


def _case(fn, p: Problem, mode):
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn()
    else:
        leaves = [p.q, p.k, p.v, *p.params]

        def run():
            out = fn()
            torch.autograd.grad(out, leaves, p.do, allow_unused=True)
            return out
    out = run()
    if not torch.isfinite(out.float()).all():
        raise RuntimeError("non-finite output")
    return _timeit(run)


CAUSAL_T, CAUSAL_D, CAUSAL_B = 8192, 128, 2


def causal_forward(device, backends):
    """masked_sdpa causal forward at T=8k, D=128, bf16 (the issue's 50%-of-matmul target) and SDPA flash's."""
    import tempattn
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(CAUSAL_B, H, CAUSAL_T, CAUSAL_D, device=device, dtype=DTYPE, generator=g) for _ in range(3))
    flops = 4 * CAUSAL_B * H * CAUSAL_T * CAUSAL_T * CAUSAL_D / 2
    out = dict(T=CAUSAL_T, D=CAUSAL_D, B=CAUSAL_B, H=H)

    def flash():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    def triton_pointers():
        os.environ["TEMPATTN_TRITON_TMA"] = "0"
        try:
            return tempattn.masked_sdpa(q, k, v, causal=True, backend="triton")
        finally:
            os.environ.pop("TEMPATTN_TRITON_TMA")
    runs = {f"tempattn-{b}": (lambda b=b: tempattn.masked_sdpa(q, k, v, causal=True, backend=b)) for b in backends}
    if "triton" in backends and "TEMPATTN_TRITON_TMA" not in os.environ:
        runs["tempattn-triton-pointers"] = triton_pointers
    runs["sdpa-flash"] = flash
    for name, fn in runs.items():
        try:
            with torch.no_grad():
                ms = _timeit(fn)
            out[name] = dict(ms=round(ms, 4), tflops=round(flops / (ms * 1e-3) / 1e12, 1))
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            out[name] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    return out


def matmul_ceiling(device):
    a, b = (torch.randn(8192, 8192, device=device, dtype=DTYPE) for _ in range(2))
    ms = _timeit(lambda: a @ b)
    return 2 * 8192 ** 3 / (ms * 1e-3) / 1e12


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=240.0, help="seconds for the whole grid")
    ap.add_argument("--json", default=None, help="write the results here (default: <out>/gpu-bench.json)")
    ap.add_argument("--out", default=os.environ.get("OUT", "build/gpu-check"))
    ap.add_argument("--ops", default=",".join(OPS))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-bench: skipped (no CUDA device)")
        return 0
    import tempattn
    t0 = time.perf_counter()
    device = torch.device("cuda")
    status = tempattn.backends()
    backends = [b for b in ("triton", "cuda") if status.get(b, {}).get("available")]
    result = dict(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                  torch=torch.__version__, triton=__import__("triton").__version__, backends=backends,
                  budget_s=args.budget, cases=[], dropped=[])
    result["matmul_bf16_tflops"] = round(matmul_ceiling(device), 1)
    result["causal_fwd"] = causal_forward(device, backends)
    last = None  # (flops, seconds) of the previous shape
    for T in TS:
        for op in args.ops.split(","):
            for mode in ("fwd", "fwd+bwd"):
                p = Problem(op, T, device, grad=mode == "fwd+bwd")
                elapsed = time.perf_counter() - t0
                if last is not None:
                    estimate = last[1] * p.flops(mode) / last[0]
                    if elapsed + estimate > args.budget:
                        result["dropped"].append(dict(op=op, T=T, mode=mode, estimate_s=round(estimate, 1)))
                        continue
                start = time.perf_counter()
                for name, fn in _providers(p, backends).items():
                    row = dict(op=op, T=T, B=p.B, H=H, D=D, dtype="bf16", mode=mode, provider=name)
                    try:
                        if isinstance(fn, Exception):
                            raise fn
                        ms = _case(fn, p, mode)
                        row.update(ms=round(ms, 4), tflops=round(p.flops(mode) / (ms * 1e-3) / 1e12, 2))
                    except Exception as e:  # noqa: BLE001 - recorded, not fatal
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    result["cases"].append(row)
                last = (p.flops(mode), time.perf_counter() - start)
                del p
                torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    path = args.json or os.path.join(args.out, "gpu-bench.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))
    return 0


def table(result) -> str:
    """One line per (op, T, mode): tempattn-triton ms, the best SDPA ms and kernel, flex ms, TFLOP/s."""
    rows = {}
    for c in result["cases"]:
        rows.setdefault((c["op"], c["T"], c["mode"]), {})[c["provider"]] = c
    lines = [f"GPU bench on {result['device']} (bf16, D={D}, H={H}, B*T={TOKENS}); "
             f"bf16 matmul ceiling {result['matmul_bf16_tflops']} TFLOP/s",
             "| op | T | mode | triton ms | TFLOP/s | best SDPA ms | flex ms | floor ms | vs SDPA | vs flex |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(c):
        return c.get("ms") if c else None

    for (op, T, mode), by in rows.items():
        tri = by.get("tempattn-triton")
        sdpas = [(ms(c), n) for n, c in by.items() if n.startswith("sdpa-") and ms(c)]
        best = min(sdpas) if sdpas else (None, "-")
        flex = ms(by.get("flex"))
        fmt = lambda x: f"{x:.3f}" if x else "err"  # noqa: E731
        ratio = lambda other: f"{other / ms(tri):.2f}x" if other and ms(tri) else "-"  # noqa: E731
        lines.append(f"| {op} | {T} | {mode} | {fmt(ms(tri))} | {tri.get('tflops', '-') if tri else '-'} | "
                     f"{fmt(best[0])} ({best[1][5:]}) | {fmt(flex)} | {fmt(ms(by.get('floor-sdpa-flash-causal')))} | "
                     f"{ratio(best[0])} | {ratio(flex)} |")
    lines += verdicts(result, rows)
    errors = [c for c in result["cases"] if "error" in c]
    if errors:
        lines.append(f"{len(errors)} provider errors (see the JSON), e.g. {errors[0]['provider']}: {errors[0]['error']}")
    if result["dropped"]:
        lines.append("dropped for the budget: " + ", ".join(f"{d['op']} T={d['T']} {d['mode']}"
                                                            for d in result["dropped"]))
    return "\n".join(lines)


def verdicts(result, rows) -> list:
    """The issue's GPU targets, each PASS / FAIL / n/a from this run's numbers."""
    def ms(c):
        return c.get("ms") if c else None

    out = []
    for (op, T, mode), by in rows.items():
        tri = ms(by.get("tempattn-triton"))
        if op == "masked_sdpa":  # >= 1.0x the fastest SDPA backend that takes the same padding mask
            best = min((ms(c) for n, c in by.items() if n.startswith("sdpa-") and ms(c)), default=None)
            ratio, need, what = (best / tri if best and tri else None), 1.0, "fastest SDPA with the mask"
        elif mode == "fwd+bwd":  # relpos / decay: >= 1.5x compiled flex_attention
            flex = ms(by.get("flex"))
            ratio, need, what = (flex / tri if flex and tri else None), 1.5, "compiled flex_attention"
        else:
            continue
        verdict = "n/a" if ratio is None else ("PASS" if ratio >= need else "FAIL")
        out.append(f"target {op} T={T} {mode}: {'-' if ratio is None else f'{ratio:.2f}x'} {what} "
                   f"(need >= {need}x): {verdict}")
    causal = result.get("causal_fwd", {})
    tri = causal.get("tempattn-triton", {})
    ceiling = result.get("matmul_bf16_tflops")
    if tri.get("tflops") and ceiling:
        share = tri["tflops"] / ceiling
        out.append(f"target causal fwd T={causal['T']} D={causal['D']} bf16: {tri['tflops']} TFLOP/s = "
                   f"{100 * share:.0f}% of the bf16 matmul's {ceiling} (need >= 50%): {'PASS' if share >= 0.5 else 'FAIL'}"
                   f"; sdpa flash {causal.get('sdpa-flash', {}).get('tflops', '-')} TFLOP/s; triton without TMA "
                   f"{causal.get('tempattn-triton-pointers', {}).get('tflops', '-')} TFLOP/s")
    elif causal:
        out.append(f"target causal fwd: n/a ({tri.get('error', 'not run')})")
    return out


if __name__ == "__main__":
    sys.exit(main())
