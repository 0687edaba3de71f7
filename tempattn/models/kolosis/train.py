"""Training, evaluation and metrics of the kolosis language models; ``main(argv)`` is the CLI.

``python -m tempattn.models kolosis --dataset shakespeare --epochs 5 --out /tmp/run`` trains one
model and prints one line per epoch: training and validation loss (nats per token), perplexity,
bits per token, the fusion weights and, with the temporal stream, γ and α (averaged over heads,
per scale and block). ``metrics.json`` in ``--out`` holds every epoch's metrics (full per-head γ
and α) and the references: the add-one unigram loss for text, and for ``synthetic`` also the
Bayes-optimal loss of the generating source.
"""
import argparse
import dataclasses
import math
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import DataUnavailable
from .. import create_model
from ..common.lm import lr_factor
from ..common.cli import TrainBudget, mean_loss, options, positive, start_run, training_parser, write_metrics
from .data import DATASETS, load_task
from .model import FUSIONS, KolosisLM

__all__ = ["mean_nll", "perplexity", "bits_per_token", "lr_factor", "evaluate", "stream_report", "TrainConfig",
           "train", "format_epoch", "main"]

MODEL_NAMES = ("kolosis", "kolosis_baseline")


# ---- metrics ----------------------------------------------------------------------------------

def mean_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood (nats per token) of ``targets (B, T)`` under ``logits (B, T, V)``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def perplexity(nll: float) -> float:
    """``exp(nll)``: the effective number of equally likely next tokens."""
    return math.exp(nll)


def bits_per_token(nll: float) -> float:
    """``nll`` in bits (bits per character for a character model)."""
    return nll / math.log(2.0)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 64) -> float:
    """Mean NLL (nats per token) over every target of ``y (N, T)`` given ``x (N, T)``, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        total += float(mean_nll(model(xb), yb)) * yb.numel()
    model.train(was_training)
    return total / y.numel()


def stream_report(model: KolosisLM) -> Dict[str, Optional[list]]:
    """Fusion weights ``(S,)`` or ``(L, S)``, and γ, α ``(L, H, scales)`` (None without the temporal stream)."""
    stats = model.decay_stats()
    return {"fusion_weights": model.fusion_weights().tolist(),
            "gamma": None if stats is None else stats.gamma.tolist(),
            "alpha": None if stats is None else stats.alpha.tolist()}


# ---- training ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainBudget):
    """Budget and optimiser settings; the learning rate warms up linearly, then decays by a cosine to 10%."""
    batch_size: int = 32
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 20


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, grad_clip: float) -> Tensor:
    loss = mean_nll(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()  # read once per epoch (mean_loss), not once per step


def train(model: KolosisLM, task, config: TrainConfig,
          on_epoch: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Train ``model`` on ``task`` (a data.TextTask / data.EchoTask); return one metrics dict per epoch.

    Deterministic given ``config.seed`` (batches come from a dedicated generator).
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, config.warmup_steps))
    model.to(config.device).train()
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        losses = []
        for _ in range(config.steps_per_epoch):
            x, y = task.train_batch(config.batch_size, generator)
            losses.append(_train_step(model, optimizer, x.to(config.device), y.to(config.device), config.grad_clip))
            schedule.step()
        val_nll = evaluate(model, task.val_x, task.val_y)
        record = {"epoch": epoch, "train_nll": mean_loss(losses), "val_nll": val_nll,
                  "val_ppl": perplexity(val_nll), "val_bits": bits_per_token(val_nll), **stream_report(model),
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


# ---- CLI --------------------------------------------------------------------------------------

def _joined(values: Sequence[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)


def format_epoch(record: dict, stream_names: Sequence[str], epochs: int) -> str:
    """One line: losses, perplexity, fusion weights (per block with layer fusion), head-mean γ and α per block."""
    weights = torch.tensor(record["fusion_weights"])
    rows = weights[None] if weights.dim() == 1 else weights
    fusion = " | ".join(" ".join(f"{n[0]}={w:.3f}" for n, w in zip(stream_names, row)) for row in rows.tolist())
    line = (f"epoch {record['epoch']}/{epochs}  train {record['train_nll']:.4f}  val {record['val_nll']:.4f}  "
            f"ppl {record['val_ppl']:.3f}  bits {record['val_bits']:.3f}  fusion [{fusion}]")
    if record["gamma"] is not None:
        gamma, alpha = torch.tensor(record["gamma"]).mean(1), torch.tensor(record["alpha"]).mean(1)  # (L, scales)
        line += "  γ " + " | ".join(_joined(g) for g in gamma.tolist())
        line += "  α " + " | ".join(_joined(a) for a in alpha.tolist())
    return f"{line}  ({record['seconds']:.1f}s)"


def _parser() -> argparse.ArgumentParser:
    p = training_parser(MODEL_NAMES, DATASETS, "shakespeare", "Train a kolosis language model; --dataset synthetic "
                        "is a geometric-lag echo source with a known optimum.", batch_size=32)
    p.add_argument("--context", type=positive(int), default=128, help="window length T")
    p.add_argument("--embed-dim", type=positive(int), default=64)
    p.add_argument("--num-heads", type=positive(int), default=4)
    p.add_argument("--num-layers", type=positive(int), default=2)
    p.add_argument("--n-concepts", type=positive(int), default=16)
    p.add_argument("--fusion", choices=FUSIONS, default="global")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--val-windows", type=positive(int), default=256, help="validation windows (or sequences)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    start_run(args)
    try:
        task = load_task(args.dataset, args.context, val_windows=args.val_windows, seed=args.seed)
    except DataUnavailable as exc:
        print(f"dataset {args.dataset!r} is unavailable: {exc}", file=sys.stderr)
        return 1
    model = create_model(args.name, vocab_size=task.vocab_size, context=args.context, embed_dim=args.embed_dim,
                         num_heads=args.num_heads, num_layers=args.num_layers, n_concepts=args.n_concepts,
                         fusion=args.fusion, dropout=args.dropout, backend=args.backend)
    config = TrainConfig.from_args(args)
    n_parameters = sum(p.numel() for p in model.parameters())
    references = ", ".join(f"{k} {v:.4f}" for k, v in task.references.items())
    print(f"{args.name} on {args.dataset}: vocab {task.vocab_size}, {n_parameters} parameters, "
          f"streams {model.stream_names}; references: {references}")
    history = train(model, task, config, on_epoch=lambda r: print(format_epoch(r, model.stream_names, args.epochs),
                                                                   flush=True))
    write_metrics(args.out, {"model": args.name, "dataset": args.dataset, "config": options(args),
                             "streams": list(model.stream_names), "n_parameters": n_parameters,
                             "references": task.references, "epochs": history, "final": history[-1]})
    return 0
