"""``python -m tempattn.models validate migt_tvdt``: the forecasting design's criteria, measured.

- ``memory_batch128_mb`` (reported): memory of one training step of the default model (5 horizons x 7
  quantiles) at batch size 128, context 64, on the synthetic seasonal VAR's windows: megabytes saved for
  the backward pass on the CPU, peak CUDA memory above the start on a GPU;
- ``memory_batch_exponent`` < 1.2: the slope of log(memory) against log(batch size), 16 .. 128 (memory
  linear in the batch);
- ``crossing_rate`` <= 0: adjacent quantile pairs with ``q_{k+1} < q_k`` over the validation windows and the
  first training ones, with perturbed weights (non-crossing by construction, not by training);
- ``padding_leak`` <= 0: the largest change of any forecast when the values at padded steps change (NaN,
  -1e6, 1e6): padding is masked with the named convention and never reaches the output.

Exit status 0 when every bounded criterion passes, 1 otherwise; ``--out`` writes ``validation.json``.
"""
import argparse
from typing import Dict, Optional, Sequence

import torch

from .. import create_model
from ..common.cli import positive
from ..common.validation import criterion, slope, step_memory, validation_main
from .data import load_dataset, make_windows
from .train import pinball_loss

__all__ = ["measure", "main"]

BATCHES = (16, 32, 64, 128)


def _model(n_vars: int, seed: int, device: str):
    torch.manual_seed(seed)
    return create_model("migt_tvdt", n_vars=n_vars).to(device)


def measure(context: int = 64, seed: int = 0, device: str = "cpu") -> Dict[str, dict]:
    data = load_dataset("synthetic", horizon=5, min_history=context // 4, synthetic_steps=3000, seed=seed)
    n_vars = data.series.values.shape[1]
    model = _model(n_vars, seed, device).train()
    origins = data.origins["train"]

    def step(batch: int):
        windows = make_windows(data.series, origins[:batch], context, model.horizon).to(device)
        return lambda: pinball_loss(model(windows.x, windows.timestamps, windows.key_padding_mask), windows.targets,
                                    model.quantiles, windows.target_mask)

    memory = {b: step_memory(step(b), device) for b in BATCHES}
    report = {"memory_batch128_mb": criterion(memory[128] / 2 ** 20, "info", None,
                                              f"MB for one training step at batch 128, context {context}",
                                              {"bytes": memory, "quantiles": list(model.quantiles),
                                               "horizon": model.horizon})}
    report["memory_batch_exponent"] = criterion(slope(list(memory), list(memory.values())), "<", 1.2,
                                                "memory ~ batch^k, batch 16..128 (linear: k ~ 1)")

    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # far from the initial, evenly spread quantiles
            p.add_(torch.randn_like(p) * 0.5)
        # the first training windows (their context reaches before the series start: padded) and the validation ones
        picks = torch.cat([origins[:context], data.origins["val"]])
        windows = make_windows(data.series, picks, context, model.horizon).to(device)
        pred = model(windows.x, windows.timestamps, windows.key_padding_mask)
        crossing = float((pred.diff(dim=-1) < 0).double().mean())
        padded = windows.key_padding_mask
        leak = 0.0
        for fill in (float("nan"), -1e6, 1e6):
            x = windows.x.masked_fill(padded[..., None], fill)
            change = (model(x, windows.timestamps, padded) - pred).abs()
            leak = max(leak, float(change.max()) if bool(torch.isfinite(change).all()) else float("inf"))
    report["crossing_rate"] = criterion(crossing, "<=", 0.0, "quantile pairs out of order (perturbed weights)",
                                        {"windows": int(pred.shape[0])})
    report["padding_leak"] = criterion(leak, "<=", 0.0, "max |change| of a forecast when padded values change",
                                       {"padded_steps": int(padded.sum()), "windows": int(padded.shape[0])})
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=positive(int), default=64, help="context steps T")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return validation_main("migt_tvdt", __doc__, lambda a: measure(a.context, a.seed, a.device), _arguments, argv)
