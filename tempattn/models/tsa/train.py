"""Training, evaluation and metrics of the fraud classifiers; ``python -m tempattn.models tsa ...``.

Metrics: ROC-AUC (Mann-Whitney, ties count one half) and PR-AUC as average precision
(``Σ_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, tied scores form one
threshold), both in plain torch. The baseline is a logistic regression on the raw features
of the last event (numeric features and one-hot categories), without any history.
"""
import argparse
import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import DataUnavailable
from .. import create_model
from ..common.cli import (TrainBudget, checkpoint_dir, non_negative, positive, report, start_run, training_parser,
                          write_metrics)
from ..common.trainer import FitResult, fit, is_main_process, save_trained
from . import data as tsa_data
from .data import EventSequences, FraudDataset
from .model import TSAGated

__all__ = ["roc_auc", "average_precision", "LogisticRegression", "last_event_features", "TrainConfig", "fit_model",
           "train",
           "evaluate", "predict", "load_dataset", "main", "MODEL_NAMES"]

MODEL_NAMES = ("tsa", "tsa_gated")


# ---- metrics ------------------------------------------------------------------------------------

def _checked_binary(metric: str, scores, labels) -> Tuple[Tensor, Tensor]:
    """(scores float64 (N,), labels bool (N,)) after checking shapes, values and that both classes occur."""
    scores, labels = torch.as_tensor(scores).detach().cpu(), torch.as_tensor(labels).detach().cpu()
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"{metric}: `scores` and `labels` must be 1-D of the same length, got shapes "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}; hint: flatten them")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{metric}: `labels` must be 0/1 (or bool), got values {torch.unique(labels)[:6].tolist()}; "
                         "hint: binarise them first")
    labels = labels.bool()
    n_positive = int(labels.sum())
    if n_positive in (0, len(labels)):
        raise ValueError(f"{metric}: `labels` must contain both classes, got {n_positive} positives of "
                         f"{len(labels)}; hint: the metric is undefined for one class - use a larger split")
    if not bool(torch.isfinite(scores.double()).all()):
        raise ValueError(f"{metric}: `scores` must be finite, got NaN or inf; hint: check the model's outputs")
    return scores.double(), labels


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values (N,)``, tied values sharing the mean of their ranks."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: ``P(score_pos > score_neg) + P(tie) / 2`` over all pairs.

    scores, labels: ``(N,)``; labels 0/1 with both classes present.
    """
    scores, labels = _checked_binary("roc_auc", scores, labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    rank_sum = float(_average_ranks(scores)[labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores, labels) -> float:
    """PR-AUC as average precision: ``Σ_k (R_k - R_{k-1}) P_k`` over thresholds at the distinct scores.

    scores, labels: ``(N,)``; labels 0/1 with both classes present. Same definition as
    scikit-learn's ``average_precision_score`` (no interpolation).
    """
    scores, labels = _checked_binary("average_precision", scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores, hits = scores[order], labels[order].double()
    # the last position of each run of equal scores closes one threshold
    closes = torch.cat([sorted_scores[1:] != sorted_scores[:-1], torch.tensor([True])])
    true_positives = hits.cumsum(0)[closes]
    predicted = (torch.arange(1, len(hits) + 1, dtype=torch.float64))[closes]
    recall = true_positives / hits.sum()
    precision = true_positives / predicted
    return float(((recall - torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])) * precision).sum())


# ---- baseline -----------------------------------------------------------------------------------

def last_event_features(events: EventSequences, cardinalities: Sequence[int]) -> Tensor:
    """Raw features of each row's last real event: numeric ``(N, F)`` and one-hot categories, float64."""
    real = ~events.padding_mask
    positions = torch.arange(real.shape[1])
    last = torch.where(real, positions, -1).amax(dim=1).clamp(min=0)
    rows = torch.arange(len(events))
    numeric = events.numeric[rows, last].double().masked_fill(~real.any(1, keepdim=True), 0)
    one_hots = [F.one_hot(events.categorical[rows, last, c].clamp(0, n - 1), n).double()
                for c, n in enumerate(cardinalities)]
    return torch.cat([numeric, *one_hots], dim=1)


@dataclasses.dataclass
class LogisticRegression:
    """L2-regularised logistic regression on standardised features, fitted by L-BFGS in float64."""
    l2: float = 1e-4
    max_iter: int = 200
    mean: Optional[Tensor] = None
    std: Optional[Tensor] = None
    weight: Optional[Tensor] = None

    def fit(self, features: Tensor, labels: Tensor) -> "LogisticRegression":
        self.mean, self.std = features.mean(0), features.std(0).clamp(min=1e-6)
        x, y = self._standardise(features), labels.double()
        self.weight = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([self.weight], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = F.binary_cross_entropy_with_logits(self._logits(x), y) + self.l2 * self.weight[1:].square().sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        self.weight = self.weight.detach()
        return self

    def decision_function(self, features: Tensor) -> Tensor:
        return self._logits(self._standardise(features))

    def _standardise(self, features: Tensor) -> Tensor:
        return (features.double() - self.mean) / self.std

    def _logits(self, x: Tensor) -> Tensor:
        return x @ self.weight[1:] + self.weight[0]


# ---- training -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainBudget):
    """Budget and optimiser. ``balance_weight`` scales the MoE load-balancing loss."""
    weight_decay: float = 1e-4
    balance_weight: float = 0.01
    eval_batch_size: int = 1024


def model_inputs(model: nn.Module, dataset: FraudDataset, device) -> Tuple[EventSequences, ...]:
    """The positional inputs of ``model`` for every row of ``dataset``: (events,) or (events, peer)."""
    if not isinstance(model, TSAGated):
        return (dataset.events.to(device),)
    if dataset.peer is None:
        raise ValueError(f"tsa_gated: `dataset.peer` must hold the second sequence, got None for dataset "
                         f"{dataset.name!r}; hint: load it with with_peer=True")
    return dataset.events.to(device), dataset.peer.to(device)


def predict(model: nn.Module, inputs: Tuple[EventSequences, ...], batch_size: int = 1024) -> Tensor:
    """Eval-mode logits ``(N,)`` on the CPU."""
    model.eval()
    with torch.no_grad():
        chunks = [model(*(x[start:start + batch_size] for x in inputs)).cpu()
                  for start in range(0, len(inputs[0]), batch_size)]
    return torch.cat(chunks)


def scores_report(logits: Tensor, labels: Tensor) -> Dict[str, float]:
    """Log loss, ROC-AUC and PR-AUC of logits ``(N,)`` against 0/1 labels ``(N,)``."""
    return {"loss": float(F.binary_cross_entropy_with_logits(logits.float(), labels.float())),
            "roc_auc": roc_auc(logits, labels), "pr_auc": average_precision(logits, labels)}


def evaluate(model: nn.Module, dataset: FraudDataset, config: TrainConfig) -> Dict[str, float]:
    return scores_report(predict(model, model_inputs(model, dataset, config.device), config.eval_batch_size),
                         dataset.labels)


MONITOR = "val_loss"


def _epoch_line(row: Dict[str, float], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_roc_auc {row['val_roc_auc']:.4f}  val_pr_auc {row['val_pr_auc']:.4f}")


def fit_model(model: nn.Module, train_set: FraudDataset, val_set: FraudDataset, config: TrainConfig,
              log: Optional[Callable[[str], None]] = print, **options) -> FitResult:
    """AdamW (cosine decay to lr/10) on BCE + ``balance_weight`` x load-balancing loss, in the shared loop;
    the best epoch (lowest validation loss) is restored. ``options``: checkpoint_dir, resume, quiet."""
    model.to(config.device)
    inputs = model_inputs(model, train_set, config.device)
    labels = train_set.labels.to(config.device)

    def loss(network: nn.Module, rows: Tensor):
        rows = rows.to(config.device)
        logits, aux = network(*(x[rows] for x in inputs), return_aux=True)
        bce = F.binary_cross_entropy_with_logits(logits, labels[rows])
        return bce + config.balance_weight * aux["load_balance"], bce

    return fit(model, config, sample=lambda g: torch.randint(len(labels), (config.batch_size,), generator=g),
               loss=loss, evaluate=lambda m: {f"val_{k}": v for k, v in evaluate(m, val_set, config).items()},
               monitor=MONITOR, log=None if log is None else (lambda row: log(_epoch_line(row, config.epochs))),
               seed_torch=True,  # the MoE's training-time gate noise
               **options)


def train(model: nn.Module, train_set: FraudDataset, val_set: FraudDataset, config: TrainConfig,
          log: Optional[Callable[[str], None]] = print, **options) -> List[Dict[str, float]]:
    """Train in place (see :func:`fit_model`); one validation line per epoch; return the per-epoch metrics."""
    return fit_model(model, train_set, val_set, config, log, **options).history


def baseline_report(train_set: FraudDataset, test_set: FraudDataset) -> Dict[str, float]:
    """Test metrics of the logistic regression on the last event's raw features."""
    cardinalities = train_set.spec.cardinalities
    baseline = LogisticRegression().fit(last_event_features(train_set.events, cardinalities), train_set.labels)
    return scores_report(baseline.decision_function(last_event_features(test_set.events, cardinalities)),
                         test_set.labels)


# ---- command line -------------------------------------------------------------------------------

def load_dataset(name: str, dataset: str, seed: int, max_len: int, n_accounts: int,
                 anomaly_rate: float) -> FraudDataset:
    """The dataset ``dataset`` ("cdnow" or "synthetic") with the peer sequence when ``name`` is tsa_gated."""
    with_peer = name == "tsa_gated"
    if dataset == "synthetic":
        config = tsa_data.SyntheticConfig(n_accounts=n_accounts, max_len=max_len, with_peer=with_peer)
        return tsa_data.make_synthetic(config, seed=seed)
    if dataset == "cdnow":
        return tsa_data.load_cdnow(max_len=max_len, anomaly_rate=anomaly_rate, seed=seed, with_peer=with_peer)
    raise ValueError(f"tsa: `dataset` must be one of {tsa_data.DATASETS}, got {dataset!r}; hint: see --help")


def _parser() -> argparse.ArgumentParser:
    parser = training_parser(MODEL_NAMES, tsa_data.DATASETS, "cdnow", "Train the fraud classifier on event "
                             "sequences. On cdnow the labels are INJECTED anomalies (semi-synthetic).",
                             config=TrainConfig)
    parser.add_argument("--d-model", type=positive(int), default=32, help="model width")
    parser.add_argument("--gate-noise", type=non_negative(float), default=1.0,
                        help="std of the MoE's training-time gate noise (0: none; needed for a run that matches "
                             "across process counts, the noise being drawn per process)")
    parser.add_argument("--balance-weight", type=non_negative(float), default=TrainConfig.balance_weight,
                        help="weight of the MoE load-balancing loss (a batch statistic: per process under torchrun)")
    parser.add_argument("--max-len", type=positive(int), default=16, help="events per window")
    parser.add_argument("--n-accounts", type=positive(int), default=3000, help="synthetic accounts")
    parser.add_argument("--anomaly-rate", type=positive(float), default=0.05,
                        help="cdnow: share of customers with an injected anomalous last transaction")
    return parser


def _reference_scores(dataset: FraudDataset, test_set: FraudDataset) -> Dict[str, float]:
    """Synthetic only: the Bayes-optimal ROC-AUC and the oracle's (clean label as score) test metrics."""
    if test_set.clean_labels is None:
        return {}
    return {"bayes_optimal_roc_auc": tsa_data.bayes_optimal_auc(dataset.fraud_rate, dataset.label_noise),
            "oracle_test_roc_auc": roc_auc(test_set.clean_labels, test_set.labels),
            "oracle_test_pr_auc": average_precision(test_set.clean_labels, test_set.labels)}


def _final_line(test: Dict[str, float], final: Dict[str, object]) -> str:
    baseline = final["baseline_logreg_last_event"]
    line = (f"test roc_auc {test['roc_auc']:.4f} pr_auc {test['pr_auc']:.4f} | baseline (logistic regression, "
            f"last event's raw features) roc_auc {baseline['roc_auc']:.4f} pr_auc {baseline['pr_auc']:.4f}")
    if "bayes_optimal_roc_auc" in final:
        line += f" | Bayes-optimal roc_auc {final['bayes_optimal_roc_auc']:.4f}"
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``NAME [options]``: train, print one line per epoch and the test metrics; 1 when the data cannot be fetched."""
    args = _parser().parse_args(argv)
    start_run(args)
    try:
        dataset = load_dataset(args.name, args.dataset, args.seed, args.max_len, args.n_accounts, args.anomaly_rate)
    except DataUnavailable as exc:
        print(f"dataset {args.dataset} unavailable: {exc}", file=sys.stderr)
        return 1
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"dataset {dataset.name}: {len(dataset)} targets, {int(dataset.labels.sum())} positive; {dataset.note}")
    train_rows, val_rows, test_rows = tsa_data.split_by_group(dataset.groups, seed=args.seed)
    train_set, val_set, test_set = (dataset.subset(rows) for rows in (train_rows, val_rows, test_rows))
    torch.manual_seed(args.seed)
    model_kwargs = {**dataset.spec.model_kwargs(), "d_model": args.d_model, "gate_noise": args.gate_noise,
                    "backend": args.backend}
    model = create_model(args.name, **model_kwargs)
    config = TrainConfig.from_args(args, balance_weight=args.balance_weight)
    result = fit_model(model, train_set, val_set, config, log=say, checkpoint_dir=checkpoint_dir(args),
                       resume=args.resume, quiet=args.quiet)
    test = evaluate(model, test_set, config)
    references = {"baseline_logreg_last_event": baseline_report(train_set, test_set),
                  **_reference_scores(dataset, test_set)}
    say(_final_line(test, references))
    save_trained(args.out, args.name, model_kwargs, model)
    write_metrics(args.out, report(model=args.name, dataset=dataset.name, config=config, model_kwargs=model_kwargs,
                                   args=args, n_parameters=sum(p.numel() for p in model.parameters()), result=result,
                                   monitor=MONITOR, final_split="test", final=test, references=references,
                                   extra={"labels": dataset.note}))
    return 0
