"""``python -m tempattn.models validate gpcm``: the knowledge-tracing design's validation criteria, measured.

Each criterion is printed with its value, its threshold and a verdict (PASS / FAIL):

- ``batch_size_cv`` < 0.2: coefficient of variation (std / mean) of the test NLL of ``gpcm`` trained at
  batch sizes 8, 16, 32, 64 on the synthetic population, each seeing the same number of students;
- ``time_exponent`` < 2.5: the slope of log(time of one training step) against log(T), T = 32 .. 256;
- ``speed_ratio`` < 2.0: median step time of ``gpcm`` / ``attention_gpcm`` (the baseline), timed alternately;
- ``parameter_ratio`` < 1.5: parameters of ``gpcm`` / ``attention_gpcm``;
- ``qwk_ratio`` >= 0.95: test QWK of ``gpcm`` / ``attention_gpcm``, same data, budget and seed;
- ``memory_exponent`` < 1.2 (linear memory): slope of log(bytes saved for the backward pass, or peak CUDA
  memory on a GPU) against log(T).

The defaults are quick settings (about a minute on 2 CPU cores); ``--students``, ``--examples`` and
``--rounds`` scale them up. ``--out`` writes ``validation.json``. Exit status 0 when every criterion passes, 1
otherwise.
"""
import argparse
import statistics
from typing import Callable, Dict, Optional, Sequence

import torch

from .. import create_model
from ..common.cli import positive
from ..common.step_timing import alternate, gpcm_step
from ..common.validation import criterion, slope, step_memory, validation_main
from .data import simulate_gpcm, split_by_student
from .train import TrainConfig, evaluate, fit_model

__all__ = ["CRITERIA", "measure", "main"]

# name -> (threshold, "<" or ">=", what)
CRITERIA = {
    "batch_size_cv": (0.2, "<", "CV of the test NLL over batch sizes 8-64"),
    "time_exponent": (2.5, "<", "time ~ T^k of a training step, T = 32..256"),
    "speed_ratio": (2.0, "<", "step time gpcm / attention_gpcm"),
    "parameter_ratio": (1.5, "<", "parameters gpcm / attention_gpcm"),
    "qwk_ratio": (0.95, ">=", "test QWK gpcm / attention_gpcm"),
    "memory_exponent": (1.2, "<", "memory ~ T^k (linear: k ~ 1)"),
}


def _trained(name: str, parts, batch_size: int, steps: int, seed: int, device: str):
    torch.manual_seed(seed)
    model = create_model(name, n_items=parts[0].n_items, n_categories=parts[0].n_categories)
    config = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=batch_size, lr=1e-2, seed=seed, device=device)
    fit_model(model, parts[0], parts[1], config, log=None, quiet=True)
    return evaluate(model, parts[2], device=device)


def _forward_at(name: str, length: int, batch: int, device: str) -> Callable[[], torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(name, n_items=50, n_categories=4).to(device).train()
    g = torch.Generator().manual_seed(0)
    items = torch.randint(50, (batch, length), generator=g).to(device)
    responses = torch.randint(4, (batch, length), generator=g).to(device)
    padding = torch.zeros(batch, length, dtype=torch.bool, device=device)
    return lambda: model(items, responses, padding).sum()


def measure(students: int = 1500, examples: int = 4096, rounds: int = 15, lengths: Sequence[int] = (32, 64, 128, 256),
            seed: int = 0, device: str = "cpu", log: Optional[Callable[[str], None]] = print) -> Dict[str, dict]:
    """Every criterion: ``{name: {"value", "threshold", "op", "pass", "detail"}}``."""
    say = log or (lambda line: None)
    sim = simulate_gpcm(students, seed=seed)
    parts = [sim.sequences.subset(index) for index in split_by_student(len(sim.sequences), seed)]
    values, details = {}, {}

    nll = {}
    for b in (8, 16, 32, 64):
        nll[b] = _trained("gpcm", parts, b, max(1, examples // b), seed, device)["nll"]
        say(f"  batch size {b:2d}: test nll {nll[b]:.4f}")
    values["batch_size_cv"] = statistics.pstdev(nll.values()) / statistics.fmean(nll.values())
    details["batch_size_cv"] = {"test_nll": nll}

    times = {}
    for length in lengths:
        step = gpcm_step("gpcm", batch=32, length=length, device=device, seed=seed)
        wall, cpu = alternate({"gpcm": step}, rounds, warmup=3, device=device)
        times[length] = statistics.median(wall["gpcm"])
        say(f"  T={length:4d}: {times[length] * 1e3:.2f} ms per training step")
    values["time_exponent"] = slope(list(times), list(times.values()))
    details["time_exponent"] = {"seconds": times}

    steps = {name: gpcm_step(name, device=device, seed=seed) for name in ("gpcm", "attention_gpcm")}
    wall, _ = alternate(steps, rounds * 4, warmup=5, device=device)
    medians = {name: statistics.median(w) for name, w in wall.items()}
    values["speed_ratio"] = medians["gpcm"] / medians["attention_gpcm"]
    details["speed_ratio"] = {"median_seconds": medians, "shape": "B=32, T=28"}

    counts = {name: sum(p.numel() for p in create_model(name).parameters()) for name in ("gpcm", "attention_gpcm")}
    values["parameter_ratio"] = counts["gpcm"] / counts["attention_gpcm"]
    details["parameter_ratio"] = {"parameters": counts}

    qwk = {name: _trained(name, parts, 32, max(1, examples // 32), seed, device)["qwk"]
           for name in ("gpcm", "attention_gpcm")}
    values["qwk_ratio"] = qwk["gpcm"] / qwk["attention_gpcm"]
    details["qwk_ratio"] = {"test_qwk": qwk}

    memory = {length: step_memory(_forward_at("gpcm", length, 8, device), device) for length in lengths}
    values["memory_exponent"] = slope(list(memory), list(memory.values()))
    details["memory_exponent"] = {"bytes": memory, "measure": "peak CUDA memory" if device.startswith("cuda")
                                  else "bytes saved for backward"}

    return {name: criterion(values[name], op, threshold, what, details[name])
            for name, (threshold, op, what) in CRITERIA.items()}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--students", type=positive(int), default=1500, help="synthetic students (train/val/test)")
    parser.add_argument("--examples", type=positive(int), default=4096,
                        help="students seen per training run (steps = examples / batch size)")
    parser.add_argument("--rounds", type=positive(int), default=15, help="timed steps per shape")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return validation_main("gpcm", __doc__, lambda a: measure(a.students, a.examples, a.rounds, seed=a.seed,
                                                              device=a.device), _arguments, argv)
