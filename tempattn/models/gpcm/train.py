"""Training, evaluation and metrics of the GPCM knowledge tracers; ``main`` is the CLI.

``python -m tempattn.models gpcm --dataset math1 --epochs 5 --out /tmp/gpcm_run``

Metrics over non-padded steps: ``nll`` (mean negative log-likelihood of the observed category),
``accuracy`` (argmax category), ``qwk`` (quadratic weighted kappa of argmax vs observed).
Every run also scores the per-item marginal baseline (training-set category frequencies of each
item) on the test students, and on ``synthetic`` the Bayes-optimal oracle that knows the true
item parameters (:func:`~tempattn.models.gpcm.data.oracle_log_probs`).
"""
import argparse
import dataclasses
import math
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...data import DataUnavailable
from .. import create_model
from ..common.cli import TrainBudget, checkpoint_dir, positive, report, start_run, training_parser, write_metrics
from ..common.trainer import FitResult, fit, is_main_process, save_trained, train_step
from .data import DATASETS, ResponseSequences, load_dataset, oracle_log_probs, simulate_gpcm, split_by_student

__all__ = ["quadratic_weighted_kappa", "prediction_metrics", "masked_nll", "per_item_marginal",
           "predict_log_probs", "evaluate", "TrainConfig", "fit_model", "train", "main"]

MODEL_NAMES = ("gpcm", "attention_gpcm")


def quadratic_weighted_kappa(targets: Tensor, predictions: Tensor, n_categories: int) -> float:
    """Cohen's kappa with quadratic weights ``w_ij = (i - j)² / (K - 1)²`` between two 1-D category tensors.

    ``κ = 1 − Σ w O / Σ w E`` with ``O`` the confusion counts and ``E`` the outer product of the
    two marginal counts divided by ``n``. NaN when undefined (``Σ w E = 0``: both constant).
    """
    if targets.shape != predictions.shape or targets.dim() != 1:
        raise ValueError(f"quadratic_weighted_kappa: `targets` and `predictions` must be 1-D of one shape, got "
                         f"{tuple(targets.shape)} and {tuple(predictions.shape)}; hint: select the valid steps first")
    observed = torch.zeros(n_categories, n_categories, dtype=torch.float64)
    observed.index_put_((targets.long().cpu(), predictions.long().cpu()),
                        torch.ones(targets.numel(), dtype=torch.float64), accumulate=True)
    expected = observed.sum(dim=1, keepdim=True) * observed.sum(dim=0, keepdim=True) / max(targets.numel(), 1)
    categories = torch.arange(n_categories, dtype=torch.float64)
    weights = (categories[:, None] - categories[None, :]) ** 2 / (n_categories - 1) ** 2
    disagreement_by_chance = float((weights * expected).sum())
    if disagreement_by_chance == 0.0:
        return math.nan
    return 1.0 - float((weights * observed).sum()) / disagreement_by_chance


def masked_nll(log_probs: Tensor, targets: Tensor, padding_mask: Tensor) -> Tensor:
    """Mean ``-log p(target)`` over non-padded steps (a differentiable scalar).

    ``log_probs (B, T, K)``, ``targets (B, T)`` long, ``padding_mask (B, T)`` bool, True = padding.
    """
    picked = log_probs.gather(-1, targets.masked_fill(padding_mask, 0)[..., None]).squeeze(-1)
    valid = ~padding_mask
    return -(picked * valid).sum() / valid.sum().clamp(min=1)


def prediction_metrics(log_probs: Tensor, targets: Tensor, padding_mask: Tensor) -> Dict[str, float]:
    """``nll``, ``accuracy``, ``qwk`` and ``count`` (scored steps) over the non-padded steps."""
    valid = ~padding_mask
    predictions = log_probs.argmax(dim=-1)
    return {"nll": float(masked_nll(log_probs, targets, padding_mask)),
            "accuracy": float((predictions == targets)[valid].double().mean()),
            "qwk": quadratic_weighted_kappa(targets[valid], predictions[valid], log_probs.shape[-1]),
            "count": int(valid.sum())}


def per_item_marginal(train: ResponseSequences, smoothing: float = 1.0) -> Tensor:
    """``(I, K)`` log frequencies of each item's categories among the training responses.

    Add-``smoothing`` counts over the categories an item has (all ``K`` without ``item_categories``).
    """
    K = train.n_categories
    counts = torch.zeros(train.n_items, K, dtype=torch.float64)
    valid = ~train.padding_mask
    counts.index_put_((train.items[valid], train.responses[valid]), torch.ones(int(valid.sum()), dtype=torch.float64),
                      accumulate=True)
    exists = torch.ones(train.n_items, K, dtype=torch.bool)
    if train.item_categories is not None:
        exists = torch.arange(K) < torch.tensor(train.item_categories)[:, None]
    smoothed = (counts + smoothing) * exists
    return (smoothed / smoothed.sum(dim=1, keepdim=True)).log().float()


def predict_log_probs(model: nn.Module, sequences: ResponseSequences, batch_size: int = 256,
                      device: str = "cpu") -> Tensor:
    """``(S, T, K)`` log probabilities of every step, in eval mode, on the CPU."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            rows = slice(start, start + batch_size)
            outputs.append(model(sequences.items[rows].to(device), sequences.responses[rows].to(device),
                                 sequences.padding_mask[rows].to(device)).cpu())
    return torch.cat(outputs)


def evaluate(model: nn.Module, sequences: ResponseSequences, batch_size: int = 256,
             device: str = "cpu") -> Dict[str, float]:
    """:func:`prediction_metrics` of the model on ``sequences``."""
    log_probs = predict_log_probs(model, sequences, batch_size, device)
    return prediction_metrics(log_probs, sequences.responses, sequences.padding_mask)


@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainBudget):
    """Budget and optimiser: ``epochs`` × ``steps_per_epoch`` AdamW steps (cosine schedule) on batches of random
    students; early stopping and the best epoch on the validation NLL."""
    grad_clip: float = 1.0

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: `{name}` must be a positive int, got {value!r}; hint: e.g. {name}=10")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: `lr` must be > 0, got {self.lr}; hint: 3e-3 works for these models")


MONITOR = "val_nll"


def _batch_loss(model: nn.Module, batch: ResponseSequences, device) -> Tensor:
    responses, padding_mask = batch.responses.to(device), batch.padding_mask.to(device)
    return masked_nll(model(batch.items.to(device), responses, padding_mask), responses, padding_mask)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: ResponseSequences,
                config: TrainConfig) -> Tensor:
    """One update (the model in training mode) as in :func:`fit_model`; the detached loss, left on the device."""
    return train_step(model, optimizer, batch, lambda m, b: _batch_loss(m, b, config.device), config.grad_clip)


def _epoch_line(record: Dict[str, float], epochs: int) -> str:
    return (f"epoch {record['epoch']}/{epochs} train_nll={record['train_nll']:.4f} val_nll={record['val_nll']:.4f} "
            f"val_acc={record['val_accuracy']:.4f} val_qwk={record['val_qwk']:.4f}")


def fit_model(model: nn.Module, train_set: ResponseSequences, val_set: ResponseSequences, config: TrainConfig,
              log: Optional[Callable[[str], None]] = print, **options) -> FitResult:
    """Train in place with the shared loop (:func:`~tempattn.models.common.trainer.fit`); the best epoch's
    weights (lowest validation NLL) are restored. ``options``: checkpoint_dir, resume, quiet."""
    return fit(model, config,
               sample=lambda g: train_set.subset(torch.randint(len(train_set), (config.batch_size,), generator=g)),
               loss=lambda m, batch: _batch_loss(m, batch, config.device),
               evaluate=lambda m: {f"val_{k}": v for k, v in evaluate(m, val_set, device=config.device).items()},
               monitor=MONITOR, train_key="train_nll",
               log=None if log is None else (lambda record: log(_epoch_line(record, config.epochs))), **options)


def train(model: nn.Module, train_set: ResponseSequences, val_set: ResponseSequences, config: TrainConfig,
          log: Optional[Callable[[str], None]] = print, **options) -> List[Dict[str, float]]:
    """Train in place (see :func:`fit_model`); return one record per epoch (``epoch``, ``train_nll``,
    ``val_*`` metrics)."""
    return fit_model(model, train_set, val_set, config, log, **options).history


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = training_parser(MODEL_NAMES, DATASETS + ("synthetic",), "math1", __doc__.split("\n")[0],
                             config=TrainConfig)
    parser.set_defaults(threads=1)  # the fastest for these small models
    for action in parser._actions:
        if action.dest == "threads":
            action.help = "torch CPU threads (1, the default here, is the fastest for these small models)"
    parser.add_argument("--embed-dim", type=positive(int), default=32, help="model width E")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout rate")
    parser.add_argument("--synthetic-students", type=positive(int), default=3000,
                        help="students simulated for --dataset synthetic (20 items, 3 categories)")
    return parser.parse_args(list(argv))


def _dataset(args: argparse.Namespace):
    """(sequences, oracle log probs or None) for ``--dataset``."""
    if args.dataset == "synthetic":
        sim = simulate_gpcm(args.synthetic_students, seed=args.seed)
        return sim.sequences, oracle_log_probs(sim)
    return load_dataset(args.dataset), None


def main(argv: Sequence[str]) -> int:
    """Train ``NAME`` on ``--dataset``, print one line per epoch, write ``--out/metrics.json``."""
    args = _parse(argv)
    start_run(args)
    try:
        sequences, oracle = _dataset(args)
    except DataUnavailable as exc:
        print(f"dataset {args.dataset!r} unavailable: {exc}", file=sys.stderr)
        return 1
    split = split_by_student(len(sequences), args.seed)
    train_set, val_set, test_set = (sequences.subset(index) for index in split)
    torch.manual_seed(args.seed)
    model_kwargs = {"n_items": sequences.n_items, "n_categories": sequences.n_categories,
                    "item_categories": sequences.item_categories, "embed_dim": args.embed_dim,
                    "dropout": args.dropout, "backend": args.backend}
    model = create_model(args.name, **model_kwargs)
    config = TrainConfig.from_args(args)
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"{args.name} on {args.dataset}: {len(train_set)}/{len(val_set)}/{len(test_set)} train/val/test students, "
        f"{sequences.n_items} items, K={sequences.n_categories}")
    result = fit_model(model, train_set, val_set, config, log=say, checkpoint_dir=checkpoint_dir(args),
                       resume=args.resume, quiet=args.quiet)
    test = evaluate(model, test_set, device=args.device)
    marginal = per_item_marginal(train_set)[test_set.items]
    references = {"per_item_marginal": prediction_metrics(marginal, test_set.responses, test_set.padding_mask)}
    if oracle is not None:
        references["oracle"] = prediction_metrics(oracle[split.test][:, :test_set.items.shape[1]],
                                                  test_set.responses, test_set.padding_mask)
    for label, metrics in [(f"test (best epoch {result.best_epoch})", test), *references.items()]:
        say(f"{label}: nll={metrics['nll']:.4f} acc={metrics['accuracy']:.4f} qwk={metrics['qwk']:.4f}")
    save_trained(args.out, args.name, model_kwargs, model)
    write_metrics(args.out, report(model=args.name, dataset=args.dataset, config=config, model_kwargs=model_kwargs,
                                   args=args, n_parameters=sum(p.numel() for p in model.parameters()), result=result,
                                   monitor=MONITOR, final_split="test", final=test, references=references))
    return 0
