"""Host-overhead measurement of one model step (a dev tool, not a benchmark; nothing asserts on it).

``python -m tempattn.models.common.step_timing [--rounds N] [--threads 1 2] [--profile NAME]``

Steps measured, each after a warm-up, on the CPU (or ``--device``):

- ``gpcm`` and ``attention_gpcm``: one training step (zero_grad, forward, masked NLL,
  backward, gradient clipping, AdamW step: ``gpcm.train._train_step``, i.e.
  ``common.trainer.train_step``) on a batch ``B = 32,
  T = 28`` (lengths 14..28, the rest padding), default model sizes.
- ``tsa``: one training step (BCE + load balance, backward, clipping, AdamW) on a batch of 64
  synthetic windows of 16 events (the defaults of :mod:`tempattn.models.tsa.train`).
- ``char_lm``: one incremental decoding step (one character, batch 1, KV caches primed with a
  64-character prompt) of the default model, eval mode, no grad; per token.

All four are timed ALTERNATELY, one step each in turn, and the medians compared: separate loops
drift by up to 2x on a shared machine. Each step reports wall time and the calling thread's CPU
time; on a loaded machine the CPU time is the steadier of the two (with ``--threads 2`` it leaves
out the second intra-op thread, and on a machine with two busy cores the wall time then measures
contention more than the step). ``--profile NAME`` prints a cProfile of steady-state steps of one
of them instead.

Where the host time went, and what the models do about it (dev note):

- gpcm: the DKVMN memory recurrence was the largest cost. It no longer loops over the T steps:
  steps are paired (only T/2 memories formed, the second step's read in closed form) and the
  memories come from a work-efficient parallel scan, 64 steps per chunk so the working set stays
  in cache. Forward + backward at B=32 (thread CPU time, 1 thread, loaded machine): 0.8x the
  speed of the old per-step loop at T=28, 1.4x at T=256, 4.2x at T=1024; growth exponent
  0.96 over T=64..1024 (the loop's 1.61). Materialising all T memories at once without chunks
  was slower (1.27, out of cache).
- Value checks (ids in range, categories, event times) run once per call at the model entry, as
  one ``aminmax`` over the padding-zeroed ids rather than several masked comparisons; the nested
  layers a model builds are told not to check again (``layer.check_inputs = False``).
- RelativeTemporalAttention soft-clamps its (categories, H) bias table and gathers a contiguous
  ``(B, H, T)`` key bias (no per-key tanh, no copy in the operator); TemporalContext pads instead
  of concatenating a fresh zeros tensor; ``split_heads`` is a plain ``view``.
- The training loop (``common.trainer.fit``) reads the loss once per epoch, not with an
  ``.item()`` per step (only a visible progress bar reads it, at most twice a second).
  ``foreach=True`` optimisers were measured and did not help on the CPU.
- Left as they are: a ``torch.arange`` per call (a cache keyed per (T, device) costs about what
  it saves), the operators' own per-call cost, and nn.Module call overhead.
"""
import argparse
import cProfile
import pstats
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["gpcm_step", "tsa_step", "char_lm_decode_step", "alternate", "main"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gpcm_step(name: str = "gpcm", batch: int = 32, length: int = 28, device: str = "cpu",
              seed: int = 0, backend: str = "auto") -> Callable[[], None]:
    """A closure running one training step of ``name`` (``gpcm`` or ``attention_gpcm``), its attention
    on the operator ``backend``."""
    from .. import create_model
    from ..gpcm.data import ResponseSequences
    from ..gpcm.train import TrainConfig, _train_step

    torch.manual_seed(seed)
    model = create_model(name, backend=backend).to(device).train()
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(model.n_items, (batch, length), generator=generator)
    responses = torch.randint(model.n_categories, (batch, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    lengths[0] = length
    padding = torch.arange(length) >= lengths[:, None]
    data = ResponseSequences(items.to(device), responses.to(device), padding.to(device), model.n_items,
                             model.n_categories)
    config = TrainConfig(device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # as gpcm.train.fit_model

    def step() -> None:
        _train_step(model, optimizer, data, config)
    return step


def tsa_step(name: str = "tsa", batch: int = 64, device: str = "cpu", seed: int = 0) -> Callable[[], None]:
    """A closure running one training step of ``tsa`` on synthetic windows (16 events)."""
    from .. import create_model
    from ..tsa import data as tsa_data

    torch.manual_seed(seed)
    dataset = tsa_data.make_synthetic(tsa_data.SyntheticConfig(n_accounts=batch), seed=seed)
    model = create_model(name, **dataset.spec.model_kwargs()).to(device).train()
    events, labels = dataset.events.to(device), dataset.labels.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)  # as tsa.train.fit_model

    def step() -> None:
        logits, aux = model(events, return_aux=True)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        (loss + 0.01 * aux["load_balance"]).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def char_lm_decode_step(prompt_length: int = 64, device: str = "cpu", seed: int = 0) -> Callable[[], None]:
    """A closure decoding one character of ``char_lm`` from a primed cache (restarting when the context fills)."""
    from .. import create_model

    torch.manual_seed(seed)
    model = create_model("char_lm").to(device).eval()
    prompt = torch.randint(model.vocab_size, (1, prompt_length), device=device)
    token = prompt[:, -1]
    with torch.no_grad():
        _, start = model._start(prompt)
    state = [start]

    def step() -> None:
        with torch.no_grad():
            if state[0].tokens.shape[1] >= model.context:
                state[0] = start
            _, state[0] = model._step(token, state[0])
    return step


def alternate(steps: Dict[str, Callable[[], None]], rounds: int, warmup: int = 10,
              device: str = "cpu") -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Run one step of each in turn, ``rounds`` times after ``warmup``.

    Returns the seconds per step of each: wall clock, and CPU time of the calling thread (less
    disturbed by other processes on a shared machine; it leaves out intra-op worker threads).
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    wall: Dict[str, List[float]] = {name: [] for name in steps}
    cpu: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            start, start_cpu = time.perf_counter(), time.thread_time()
            step()
            _sync(device)
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu


def _profile(step: Callable[[], None], n: int = 200) -> None:
    for _ in range(20):
        step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        step()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


def _builders(device: str) -> Dict[str, Callable[[], Callable[[], None]]]:
    return {"gpcm": lambda: gpcm_step("gpcm", device=device),
            "attention_gpcm": lambda: gpcm_step("attention_gpcm", device=device),
            "tsa": lambda: tsa_step(device=device),
            "char_lm": lambda: char_lm_decode_step(device=device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", choices=("gpcm", "attention_gpcm", "tsa", "char_lm"))
    args = parser.parse_args(argv)
    builders = _builders(args.device)
    if args.profile:
        torch.set_num_threads(args.threads[0])
        _profile(builders[args.profile]())
        return 0
    for threads in args.threads:
        torch.set_num_threads(threads)
        steps = {name: build() for name, build in builders.items()}
        wall, cpu = alternate(steps, args.rounds, device=args.device)
        print(f"threads={threads} rounds={args.rounds} device={args.device}: median us per step (wall, thread CPU)")
        medians = {}
        for name in steps:
            medians[name] = (statistics.median(wall[name]) * 1e6, statistics.median(cpu[name]) * 1e6)
            print(f"  {name:16s} {medians[name][0]:10.1f} {medians[name][1]:10.1f}")
        ratios = [medians["gpcm"][i] / medians["attention_gpcm"][i] for i in (0, 1)]
        print(f"  gpcm / attention_gpcm  {ratios[0]:10.3f} {ratios[1]:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
