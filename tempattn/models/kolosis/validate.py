"""``python -m tempattn.models validate kolosis``: the language-model design's criteria, measured.

``kolosis`` and ``kolosis_baseline`` (no temporal stream) are trained with the same seed, data, budget and
batches (``--dataset``, default the synthetic geometric-echo source whose optimum is a decay-weighted
history average; ``--steps`` AdamW steps), then:

- ``temporal_ppl_ratio`` < 1: validation perplexity of kolosis / the baseline's (the temporal stream helps);
  with ``--controls`` also ``plain_ppl_ratio`` and ``relpos_ppl_ratio`` (reported): kolosis / the
  equal-size plain third stream, and kolosis / the baseline with relative positions;
- ``gamma_in_range`` >= 1: the share of the learned decay rates γ inside their scale's range (fast
  0.6-0.9, medium 0.85-1.0, slow 0.95-1.0), with per-scale mean, min, max and the spread over heads;
- ``alpha_sum_error`` <= 1e-5: the largest |Σ_s α_hs − 1| (mixing weights are a distribution), with the
  per-scale mean and the mean entropy in nats;
- ``fusion_sum_error`` <= 1e-5: |Σ π − 1| of the fusion weights, and ``temporal_fusion_share`` (reported):
  the temporal stream's weight π_temporal (1/3 at the start).

Exit status 0 when every bounded criterion passes, 1 otherwise; ``--out`` writes ``validation.json``.
"""
import argparse
from typing import Dict, Optional, Sequence

import torch

from .. import create_model
from ..common.cli import positive
from ..common.validation import criterion, validation_main
from .data import DATASETS, load_task
from .model import KolosisLM
from .train import TrainConfig, evaluate, fit_model, perplexity

__all__ = ["measure", "main"]

SMALL = {"embed_dim": 32, "num_heads": 4, "num_layers": 2, "n_concepts": 8}
"""The model size of the quick settings (the CLI's --embed-dim etc. are larger)."""


def _trained(name: str, task, steps: int, seed: int, device: str) -> KolosisLM:
    torch.manual_seed(seed)
    model = create_model(name, vocab_size=task.vocab_size, context=task.context, **SMALL)
    config = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=32, lr=2e-2 if steps < 500 else 3e-3,
                         warmup_steps=10, seed=seed, device=device)
    fit_model(model, task, config, quiet=True)
    return model


def _gamma_stats(model: KolosisLM) -> dict:
    stats = model.decay_stats()  # (L, H, S)
    low = torch.tensor([lo for lo, _ in model.blocks[0].streams["temporal"].attention.scales])
    high = torch.tensor([hi for _, hi in model.blocks[0].streams["temporal"].attention.scales])
    gamma = stats.gamma.cpu()
    inside = ((gamma >= low) & (gamma <= high)).double().mean()
    per_scale = gamma.flatten(0, 1)  # (L·H, S)
    alpha = stats.alpha.cpu()
    return {"inside": float(inside), "alpha_error": float((alpha.sum(-1) - 1).abs().max()),
            "gamma": {"mean": per_scale.mean(0).tolist(), "min": per_scale.amin(0).tolist(),
                      "max": per_scale.amax(0).tolist(), "std_over_heads": per_scale.std(0).tolist(),
                      "ranges": list(zip(low.tolist(), high.tolist()))},
            "alpha": {"mean": alpha.flatten(0, 1).mean(0).tolist(),
                      "mean_entropy": float(-(alpha * alpha.clamp_min(1e-30).log()).sum(-1).mean())}}


def measure(dataset: str = "synthetic", steps: int = 150, context: int = 32, controls: bool = False, seed: int = 0,
            device: str = "cpu") -> Dict[str, dict]:
    task = load_task(dataset, context, val_windows=128, seed=seed)
    names = ["kolosis", "kolosis_baseline"] + (["kolosis_plain", "kolosis_relpos"] if controls else [])
    models = {name: _trained(name, task, steps, seed, device) for name in names}
    ppl = {name: perplexity(evaluate(model, task.val_x, task.val_y)) for name, model in models.items()}
    setting = {"dataset": dataset, "steps": steps, "context": context, "seed": seed, "perplexity": ppl,
               "references": {k: perplexity(v) for k, v in task.references.items()}}
    report = {"temporal_ppl_ratio": criterion(ppl["kolosis"] / ppl["kolosis_baseline"], "<", 1.0,
                                              "val perplexity kolosis / kolosis_baseline (no temporal stream)",
                                              setting)}
    if controls:
        report["plain_ppl_ratio"] = criterion(ppl["kolosis"] / ppl["kolosis_plain"], "info", None,
                                              "val perplexity kolosis / kolosis_plain (plain third stream)")
        report["relpos_ppl_ratio"] = criterion(ppl["kolosis"] / ppl["kolosis_relpos"], "info", None,
                                               "val perplexity kolosis / kolosis_relpos (relative positions)")
    kolosis = models["kolosis"]
    stats = _gamma_stats(kolosis)
    report["gamma_in_range"] = criterion(stats["inside"], ">=", 1.0, "share of γ inside its scale's range",
                                         stats["gamma"])
    report["alpha_sum_error"] = criterion(stats["alpha_error"], "<=", 1e-5, "max |Σ_s α - 1| over blocks and heads",
                                          stats["alpha"])
    fusion = kolosis.fusion_weights().cpu()
    report["fusion_sum_error"] = criterion(float((fusion.sum(-1) - 1).abs().max()), "<=", 1e-5, "|Σ π - 1|",
                                           {"streams": list(kolosis.stream_names), "weights": fusion.tolist()})
    temporal = kolosis.stream_names.index("temporal")
    report["temporal_fusion_share"] = criterion(float(fusion[..., temporal].mean()), "info", None,
                                                "fusion weight of the temporal stream (1/3 at the start)")
    return report


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic", help="training data")
    parser.add_argument("--steps", type=positive(int), default=150, help="training steps of each model")
    parser.add_argument("--context", type=positive(int), default=32, help="window length T")
    parser.add_argument("--controls", action="store_true",
                        help="also train kolosis_plain and kolosis_relpos and report their perplexity ratios")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return validation_main("kolosis", __doc__, lambda a: measure(a.dataset, a.steps, a.context, a.controls, a.seed,
                                                                 a.device), _arguments, argv)
