"""The CPU kernels' speed at each ISA level (`make bench-isa`; not a pytest suite).

``python benchmarks/isa_speed.py [--rounds N] [--repeats R] [--levels default,avx2,...] [--T 4096]`` times the
fused ``cpu`` backend at the headline shape (fp32, B=2, H=4, T=4096, D=64; the cases of the
benchmark suite: masked_sdpa causal with the last 10% of keys padded in every odd batch row,
relpos_attention W=64, decay_attention S=3, forward) once per level this build and CPU can run.
The level is chosen once per process, so each level runs in child processes with
TEMPATTN_CPU_CAPABILITY set: R repeats, each running one child per level in turn (each timing
every case in interleaved rounds), so a machine busy with other work slows the levels alike.
Prints a Markdown table of the medians over all rounds (ms) and each level's slow-down against the
widest.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

CASES = ("masked_sdpa causal + padding fwd", "relpos_attention W=64 fwd", "decay_attention S=3 fwd")


def make_calls(T: int):
    import tempattn
    torch.manual_seed(0)
    B, H, D, W, S = 2, 4, 64, 64, 3
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1::2, T - round(T * 0.1):] = False
    rel_bias = 0.5 * torch.randn(H, W + 1)
    log_gamma = torch.linspace(0.7, 0.99, S).log().expand(H, S).clone()
    alpha_logits = 0.1 * torch.randn(H, S)
    return {
        CASES[0]: lambda: tempattn.masked_sdpa(q, k, v, key_valid_mask=valid, causal=True, backend="cpu"),
        CASES[1]: lambda: tempattn.relpos_attention(q, k, v, rel_bias, window=W, backend="cpu"),
        CASES[2]: lambda: tempattn.decay_attention(q, k, v, log_gamma, alpha_logits, eps=1e-8, backend="cpu"),
    }


def child(rounds: int, T: int) -> None:
    """Times every case in this process's level; prints one JSON line."""
    import tempattn
    calls = make_calls(T)
    with torch.inference_mode():
        for fn in calls.values():
            fn()
            fn()
        times = {name: [] for name in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    print(json.dumps({"capability": tempattn.backends()["cpu"].get("capability"), "threads": torch.get_num_threads(),
                      "ms": {name: [1e3 * x for x in t] for name, t in times.items()}}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case and child (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="children per level, run in turn (default 3)")
    parser.add_argument("--levels", default=None, help="comma-separated levels (default: every runnable one)")
    parser.add_argument("--T", type=int, default=4096, help="sequence length (default 4096)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.rounds, args.T)
        return 0
    import tempattn
    status = tempattn.backends()["cpu"]
    if not status["available"]:
        sys.exit(f"the cpu backend is unavailable: {status['reason']}")
    levels = args.levels.split(",") if args.levels else status["capabilities"]
    samples = {level: {case: [] for case in CASES} for level in levels}
    threads = None
    for repeat in range(args.repeats):
        for level in levels:
            env = {**os.environ, "TEMPATTN_CPU_CAPABILITY": level}
            done = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--T", str(args.T)],
                                  env=env, capture_output=True, text=True, check=True)
            child_result = json.loads(done.stdout.strip().splitlines()[-1])
            if child_result["capability"] != level:
                sys.exit(f"TEMPATTN_CPU_CAPABILITY={level} ran at {child_result['capability']}")
            threads = child_result["threads"]
            for case, ms in child_result["ms"].items():
                samples[level][case] += ms
            medians = {case: round(statistics.median(ms), 2) for case, ms in child_result["ms"].items()}
            print(f"repeat {repeat + 1}, {level}: {medians}", file=sys.stderr, flush=True)
    results = {level: {"ms": {case: statistics.median(ms) for case, ms in cases.items()}} for level, cases in samples.items()}
    best = levels[-1]
    print(f"\nfp32, B=2, H=4, T={args.T}, D=64, {threads} torch threads; median ms of {args.repeats} × {args.rounds} "
          f"rounds (× = time / time at {best})\n")
    print("| case | " + " | ".join(levels) + " |")
    print("|---|" + "---|" * len(levels))
    for case in CASES:
        cells = []
        for level in levels:
            ms = results[level]["ms"][case]
            ratio = ms / results[best]["ms"][case]
            cells.append(f"{ms:.3g}" + ("" if level == best else f" ({ratio:.2f}×)"))
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
