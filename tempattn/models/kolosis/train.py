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
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import DataUnavailable
from .. import create_model
from ..common.lm import lr_factor
from ..common.cli import TrainBudget, checkpoint_dir, positive, report, start_run, training_parser, write_metrics
from ..common.trainer import FitResult, fit, is_main_process, save_trained
from .data import DATASETS, load_task
from .model import FUSIONS, KolosisLM

__all__ = ["mean_nll", "perplexity", "bits_per_token", "lr_factor", "evaluate", "stream_report", "TrainConfig",
           "fit_model", "train", "format_epoch", "main"]

MODEL_NAMES = ("kolosis", "kolosis_baseline", "kolosis_plain", "kolosis_relpos")


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


MONITOR = "val_nll"


def fit_model(model: KolosisLM, task, config: TrainConfig, on_epoch: Optional[Callable[[dict], None]] = None,
              **options) -> FitResult:
    """Train ``model`` on ``task`` (a data.TextTask / data.EchoTask) in the shared loop; the best epoch (lowest
    validation NLL) is restored. Deterministic given ``config.seed`` (batches come from a dedicated generator).
    ``options``: checkpoint_dir, resume, quiet."""
    device = config.device

    def loss(network, batch):
        x, y = batch
        return mean_nll(network(x.to(device)), y.to(device))

    def validate(m):
        val_nll = evaluate(m, task.val_x, task.val_y)
        return {"val_nll": val_nll, "val_ppl": perplexity(val_nll), "val_bits": bits_per_token(val_nll),
                **stream_report(m)}

    return fit(model, config, sample=lambda g: task.train_batch(config.batch_size, g), loss=loss, evaluate=validate,
               monitor=MONITOR, train_key="train_nll", timed=True, log=on_epoch, **options)


def train(model: KolosisLM, task, config: TrainConfig,
          on_epoch: Optional[Callable[[dict], None]] = None, **options) -> List[dict]:
    """Train ``model`` on ``task`` (see :func:`fit_model`); return one metrics dict per epoch."""
    return fit_model(model, task, config, on_epoch, **options).history


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
                        "is a geometric-lag echo source with a known optimum.", config=TrainConfig)
    p.add_argument("--context", type=positive(int), default=128, help="window length T")
    p.add_argument("--embed-dim", type=positive(int), default=64, help="model width E")
    p.add_argument("--num-heads", type=positive(int), default=4, help="heads of every stream")
    p.add_argument("--num-layers", type=positive(int), default=2, help="fused blocks")
    p.add_argument("--n-concepts", type=positive(int), default=16, help="concept prototypes")
    p.add_argument("--fusion", choices=FUSIONS, default="global", help="one fusion weight vector, or one per block")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate in training")
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
    model_kwargs = {"vocab_size": task.vocab_size, "context": args.context, "embed_dim": args.embed_dim,
                    "num_heads": args.num_heads, "num_layers": args.num_layers, "n_concepts": args.n_concepts,
                    "fusion": args.fusion, "dropout": args.dropout, "backend": args.backend}
    model = create_model(args.name, **model_kwargs)
    config = TrainConfig.from_args(args)
    n_parameters = sum(p.numel() for p in model.parameters())
    references = ", ".join(f"{k} {v:.4f}" for k, v in task.references.items())
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"{args.name} on {args.dataset}: vocab {task.vocab_size}, {n_parameters} parameters, "
        f"streams {model.stream_names}; references: {references}")
    result = fit_model(model, task, config,
                       on_epoch=lambda r: print(format_epoch(r, model.stream_names, args.epochs), flush=True),
                       checkpoint_dir=checkpoint_dir(args), resume=args.resume, quiet=args.quiet)
    best = result.history[result.best_epoch - 1]
    final = {k: v for k, v in best.items() if k not in ("epoch", "train_nll", "seconds")}
    say(f"best: epoch {result.best_epoch}, val_nll {final['val_nll']:.4f}, ppl {final['val_ppl']:.3f}")
    save_trained(args.out, args.name, model_kwargs, model)
    write_metrics(args.out, report(model=args.name, dataset=args.dataset, config=config, model_kwargs=model_kwargs,
                                   args=args, n_parameters=n_parameters, result=result, monitor=MONITOR,
                                   final_split="val", final=final, references=task.references,
                                   extra={"streams": list(model.stream_names)}))
    return 0
