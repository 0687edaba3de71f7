"""What every ``python -m tempattn.models validate FAMILY`` shares: the criterion rows, log-log slopes, memory
measurement and the command line around a family's ``measure``.

A report is ``{criterion: {"value", "threshold", "op", "pass", "what", "detail"}}``. ``op`` is ``"<"``,
``"<="`` or ``">="`` for a criterion the design names with a bound (verdict PASS / FAIL), or ``"info"``
for a statistic the design asks to see without a bound (verdict INFO, ``pass`` None).
"""
import argparse
import json
import math
import pathlib
import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import torch

from .cli import positive

__all__ = ["criterion", "verdict_of", "slope", "saved_bytes", "step_memory", "print_report", "validation_main"]

_OPS = {"<": lambda v, t: v < t, "<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t}


def criterion(value: float, op: str, threshold: Optional[float], what: str, detail=None) -> dict:
    """One row: ``pass`` is ``value op threshold`` (None for ``op="info"``)."""
    ok = None if op == "info" else bool(_OPS[op](value, threshold))
    return {"value": float(value), "threshold": threshold, "op": op, "pass": ok, "what": what, "detail": detail}


def verdict_of(row: dict) -> str:
    return "INFO" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of log(y) against log(x): the growth exponent ``k`` of ``y ~ x^k``."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensor storages autograd saves for the backward pass of one ``forward()``."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())


def step_memory(forward: Callable[[], torch.Tensor], device: str) -> int:
    """Memory of one training step's forward + backward: the peak CUDA memory above what was allocated
    before it on a GPU; on the CPU the bytes saved for the backward pass (:func:`saved_bytes`)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return saved_bytes(forward)


def print_report(report: Dict[str, dict], seconds: float) -> None:
    for name, row in report.items():
        bound = "" if row["pass"] is None else f" {row['op']} {row['threshold']:<5g}"
        print(f"{verdict_of(row):4s}  {name:22s} {row['value']:10.4f}{bound} ({row['what']})")
    checked = [r for r in report.values() if r["pass"] is not None]
    print(f"{sum(r['pass'] for r in checked)}/{len(checked)} criteria pass, {len(report) - len(checked)} reported "
          f"({seconds:.0f} s)")


def validation_main(family: str, doc: str, measure: Callable[[argparse.Namespace], Dict[str, dict]],
                    add_arguments: Callable[[argparse.ArgumentParser], None],
                    argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tempattn.models validate FAMILY``: parse (``add_arguments`` plus --seed, --device, --threads,
    --out), run ``measure(args)``, print every row with its verdict, write ``--out/validation.json``; exit
    status 0 when every bounded criterion passes, 1 otherwise."""
    parser = argparse.ArgumentParser(prog=f"python -m tempattn.models validate {family}",
                                     description=doc.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=positive(int), default=1, help="torch CPU threads")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="directory for validation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"{family}: the design's validation criteria (quick settings; see --help)")
    report = measure(args)
    print_report(report, time.perf_counter() - started)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "validation.json").write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(r["pass"] is not False for r in report.values()) else 1
