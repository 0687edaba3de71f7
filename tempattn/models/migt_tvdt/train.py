"""Metrics, baselines, training and evaluation of MIGT-TVDT; ``main(argv)`` is the command line.

Metrics on forecasts ``pred (B, H, V, Q)`` of ``target (B, H, V)``; an entry is scored when the
target is finite and its ``mask`` entry (``(B, H)`` or ``(B, H, V)`` bool, True = scored) is set:

- pinball loss ``mean over scored (b, h, v) and q of max(tau_q u, (tau_q - 1) u)``, ``u = y - q``;
- coverage of the outer interval ``[q_lowest, q_highest]`` (nominal ``tau_max - tau_min``);
- calibration: per level, the fraction of targets ``<= q_k`` (nominal ``tau_k``);
- crossing rate: the fraction of adjacent quantile pairs with ``q_{k+1} < q_k`` (0 by construction).

Baselines (:class:`EmpiricalQuantileBaseline`, fitted on the training windows): *naive* — the last
observed value plus the empirical quantiles of the ``h``-step change; *climatology* — the
empirical quantiles of the value itself. On synthetic data the true conditional quantiles
(*oracle*) give the achievable optimum.
"""
import argparse
import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ...data import DataUnavailable
from .. import create_model
from ..common.cli import TrainBudget, checkpoint_dir, positive, report, start_run, training_parser, write_metrics
from ..common.trainer import fit as common_fit, is_main_process, save_trained
from .data import DATASETS, ForecastData, Windows, load_dataset, make_windows
from .model import MIGTTVDT, check_quantiles, last_valid_index

__all__ = ["pinball_loss", "pinball_per_variable", "interval_coverage", "quantile_calibration", "crossing_rate",
           "EmpiricalQuantileBaseline", "TrainConfig", "fit", "predict", "evaluate_forecasts", "reference_scores",
           "split_windows", "main"]

DEFAULT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)  # the design: 5 horizons x 7 quantiles


# ---- metrics ------------------------------------------------------------------------------------

def _scored(pred: Tensor, target: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Check shapes; return ``(B, H, V)`` bool, True where the target is finite and masked in."""
    if pred.dim() != 4 or pred.shape[:3] != target.shape:
        raise ValueError(f"metrics: `pred` must be (B, H, V, Q) matching `target` (B, H, V) = {tuple(target.shape)}, "
                         f"got {tuple(pred.shape)}; hint: pass the model output and the windows' targets")
    scored = torch.isfinite(target)
    if mask is None:
        return scored
    if mask.dtype != torch.bool or tuple(mask.shape) not in (tuple(target.shape[:2]), tuple(target.shape)):
        raise ValueError(f"metrics: `mask` must be bool (B, H) or (B, H, V) for target {tuple(target.shape)}, got "
                         f"{mask.dtype} {tuple(mask.shape)}; hint: True marks a scored target")
    return scored & (mask if mask.dim() == 3 else mask.unsqueeze(-1))


def _pinball_terms(pred: Tensor, target: Tensor, quantiles: Sequence[float]) -> Tensor:
    """``(B, H, V)``: the pinball loss averaged over the ``Q`` levels (NaN targets give NaN terms)."""
    if len(quantiles) != pred.shape[-1]:
        raise ValueError(f"pinball_loss: `quantiles` must have Q = {pred.shape[-1]} levels like pred, got "
                         f"{len(quantiles)}; hint: pass the levels the model was built with")
    tau = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    residual = target.unsqueeze(-1) - pred
    return torch.maximum(tau * residual, (tau - 1) * residual).mean(dim=-1)


def _masked_mean(values: Tensor, scored: Tensor, dim=None) -> Tensor:
    total = torch.where(scored, values, 0.0).sum(dim=dim)
    return total / scored.sum(dim=dim).clamp_min(1)


def pinball_loss(pred: Tensor, target: Tensor, quantiles: Sequence[float], mask: Optional[Tensor] = None) -> Tensor:
    """Mean pinball loss over scored targets and levels (a differentiable scalar)."""
    scored = _scored(pred, target, mask)
    return _masked_mean(_pinball_terms(pred, target, quantiles), scored)


def pinball_per_variable(pred: Tensor, target: Tensor, quantiles: Sequence[float],
                         mask: Optional[Tensor] = None) -> Tensor:
    """``(V,)`` mean pinball loss of each variable."""
    scored = _scored(pred, target, mask)
    return _masked_mean(_pinball_terms(pred, target, quantiles), scored, dim=(0, 1))


def interval_coverage(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> float:
    """Fraction of scored targets inside ``[pred[..., 0], pred[..., -1]]``."""
    scored = _scored(pred, target, mask)
    inside = (target >= pred[..., 0]) & (target <= pred[..., -1])
    return float(_masked_mean(inside.double(), scored))


def quantile_calibration(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``(Q,)`` float64: per level, the fraction of scored targets at or below that quantile."""
    scored = _scored(pred, target, mask).unsqueeze(-1)
    below = (target.unsqueeze(-1) <= pred).double()
    return _masked_mean(below, scored.expand_as(below), dim=(0, 1, 2))


def crossing_rate(pred: Tensor) -> float:
    """Fraction of adjacent level pairs ``(k, k + 1)`` in ``pred (..., Q)`` with ``q_{k+1} < q_k``."""
    if pred.shape[-1] < 2:
        return 0.0
    return float((pred.diff(dim=-1) < 0).double().mean())


def evaluate_forecasts(pred: Tensor, windows: Windows, quantiles: Sequence[float]) -> Dict[str, object]:
    """All metrics of ``pred (B, H, V, Q)`` on the windows' scored targets, as plain Python values."""
    args = (pred, windows.targets)
    return {
        "pinball": float(pinball_loss(*args, quantiles, windows.target_mask)),
        "pinball_per_variable": pinball_per_variable(*args, quantiles, windows.target_mask).tolist(),
        "coverage": interval_coverage(*args, windows.target_mask),
        "nominal_coverage": quantiles[-1] - quantiles[0],
        "calibration": quantile_calibration(*args, windows.target_mask).tolist(),
        "crossing_rate": crossing_rate(pred),
    }


# ---- baselines ----------------------------------------------------------------------------------

def _last_observed(windows: Windows) -> Tensor:
    """``(B, V)``: each window's values at its origin (the last non-padded step)."""
    rows = torch.arange(windows.x.shape[0], device=windows.x.device)
    return windows.x[rows, last_valid_index(windows.key_padding_mask)]


@dataclasses.dataclass(frozen=True)
class EmpiricalQuantileBaseline:
    """Forecast = anchor + ``offsets (H, V, Q)``; the anchor is the last observed value or 0."""
    offsets: Tensor
    relative_to_last: bool

    @staticmethod
    def fit(windows: Windows, quantiles: Sequence[float], relative_to_last: bool) -> "EmpiricalQuantileBaseline":
        """Empirical quantiles over the scored targets of ``windows`` (of the change when ``relative_to_last``)."""
        targets = windows.targets.double().masked_fill(~windows.target_mask.unsqueeze(-1), float("nan"))
        if relative_to_last:
            targets = targets - _last_observed(windows).double().unsqueeze(1)
        levels = torch.tensor(quantiles, dtype=torch.float64)
        offsets = torch.nanquantile(targets, levels, dim=0).permute(1, 2, 0)  # (Q, H, V) -> (H, V, Q)
        return EmpiricalQuantileBaseline(offsets.float(), relative_to_last)

    def predict(self, windows: Windows) -> Tensor:
        if not self.relative_to_last:
            return self.offsets.expand(windows.x.shape[0], *self.offsets.shape)
        return _last_observed(windows)[:, None, :, None] + self.offsets


def split_windows(data: ForecastData, context: int, horizon: int) -> Dict[str, Windows]:
    """Every window of each split, keyed "train", "val", "test"."""
    return {name: make_windows(data.series, origins, context, horizon) for name, origins in data.origins.items()}


def reference_scores(data: ForecastData, windows: Dict[str, Windows],
                     quantiles: Sequence[float]) -> Dict[str, Dict[str, Dict[str, object]]]:
    """Metrics of the naive and climatology baselines (and the oracle on synthetic data) on val and test."""
    predictors: Dict[str, Callable[[Windows], Tensor]] = {
        "naive": EmpiricalQuantileBaseline.fit(windows["train"], quantiles, relative_to_last=True).predict,
        "climatology": EmpiricalQuantileBaseline.fit(windows["train"], quantiles, relative_to_last=False).predict,
    }
    if data.process is not None:
        horizon = windows["train"].targets.shape[1]
        predictors["oracle"] = lambda w: data.process.conditional_quantiles(data.series, w.origins, horizon, quantiles)
    return {name: {split: evaluate_forecasts(predict_fn(windows[split]), windows[split], quantiles)
                   for split in ("val", "test")}
            for name, predict_fn in predictors.items()}


# ---- training -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainBudget):
    """Optimisation budget and windowing; ``seed`` fixes the batch order. The cosine schedule decays to 0."""
    epochs: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.0
    context: int = 64
    eval_batch_size: int = 512

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size", "context", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"TrainConfig: `{name}` must be a positive int, got {value!r}; "
                                 "hint: every budget and window size needs at least 1")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: `lr` must be > 0, got {self.lr!r}; hint: try 2e-3")


@torch.no_grad()
def predict(model: MIGTTVDT, windows: Windows, batch_size: int = 512, device: str = "cpu") -> Tensor:
    """The model's quantiles ``(B, H, V, Q)`` for every window, on the CPU, in eval mode."""
    model.eval()
    chunks = []
    for start in range(0, windows.x.shape[0], batch_size):
        part = slice(start, start + batch_size)
        chunks.append(model(windows.x[part].to(device), windows.timestamps[part].to(device),
                            windows.key_padding_mask[part].to(device)).cpu())
    return torch.cat(chunks)


MONITOR = "val.pinball"


def fit(model: MIGTTVDT, data: ForecastData, config: TrainConfig,
        log: Optional[Callable[[str], None]] = print, **options) -> Dict[str, object]:
    """Train in the shared loop, keep the weights of the epoch with the lowest validation pinball loss, and
    score them on test. ``options``: checkpoint_dir, resume, quiet.

    Returns ``{"epochs": [...], "best_epoch", "stopped_early", "references", "test", "fit_result"}`` (metrics as
    from :func:`evaluate_forecasts`; ``references`` from :func:`reference_scores`; ``fit_result`` the shared loop's
    :class:`~tempattn.models.common.trainer.FitResult`, not JSON).
    """
    model.to(config.device)
    windows = split_windows(data, config.context, model.horizon)
    references = reference_scores(data, windows, model.quantiles)
    train_origins = data.origins["train"]

    def loss(network, picks: Tensor) -> Tensor:
        batch = make_windows(data.series, train_origins[picks], config.context, model.horizon).to(config.device)
        pred = network(batch.x, batch.timestamps, batch.key_padding_mask)
        return pinball_loss(pred, batch.targets, model.quantiles, batch.target_mask)

    def validate(m) -> Dict[str, object]:
        return {"val": evaluate_forecasts(predict(m, windows["val"], config.eval_batch_size, config.device),
                                          windows["val"], m.quantiles)}

    result = common_fit(model, config,
                        sample=lambda g: torch.randint(len(train_origins), (config.batch_size,), generator=g),
                        loss=loss, evaluate=validate, monitor=MONITOR, train_key="train_pinball",
                        log=None if log is None else (lambda r: log(_epoch_line(r["epoch"], config.epochs,
                                                                                  r["train_pinball"], r["val"],
                                                                                  references))),
                        **options)
    test = evaluate_forecasts(predict(model, windows["test"], config.eval_batch_size, config.device),
                              windows["test"], model.quantiles)
    return {"epochs": result.history, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "references": references, "test": test, "fit_result": result}


def _epoch_line(epoch: int, epochs: int, train_pinball: float, val: Dict[str, object],
                references: Dict[str, Dict[str, Dict[str, object]]]) -> str:
    others = ", ".join(f"{name} {scores['val']['pinball']:.4f}" for name, scores in references.items())
    return (f"epoch {epoch}/{epochs}  train_pinball {train_pinball:.4f}  val_pinball {val['pinball']:.4f}  "
            f"val_coverage {val['coverage']:.3f} (nominal {val['nominal_coverage']:.2f})  "
            f"crossing {val['crossing_rate']:g}  | val {others}")


# ---- command line -------------------------------------------------------------------------------

def _quantile_list(text: str) -> tuple:
    try:
        return check_quantiles([float(part) for part in text.split(",")])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--quantiles: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = training_parser(["migt_tvdt"], DATASETS, "sp500_nasdaq", "Train the MIGT-TVDT quantile forecaster.",
                             epochs=TrainConfig.epochs, steps_per_epoch=TrainConfig.steps_per_epoch,
                             batch_size=TrainConfig.batch_size, lr=TrainConfig.lr, config=TrainConfig)
    parser.add_argument("--context", type=positive(int), default=TrainConfig.context, help="context steps T")
    parser.add_argument("--horizon", type=positive(int), default=5, help="steps H forecast after the origin")
    parser.add_argument("--quantiles", type=_quantile_list, default=DEFAULT_QUANTILES,
                        help="comma-separated increasing levels, e.g. 0.05,0.5,0.95")
    parser.add_argument("--d-model", type=positive(int), default=32, help="token width d")
    parser.add_argument("--heads", type=positive(int), default=4, help="attention heads")
    parser.add_argument("--layers", type=positive(int), default=2, help="temporal + cross-variable blocks")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate in training")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    config = TrainConfig.from_args(args, context=args.context)
    start_run(args)
    try:
        data = load_dataset(args.dataset, horizon=args.horizon, min_history=args.context // 4, seed=args.seed)
    except DataUnavailable as exc:
        print(f"migt_tvdt: dataset {args.dataset!r} unavailable: {exc}", file=sys.stderr)
        return 1
    model_kwargs = {"n_vars": data.series.values.shape[1], "horizon": args.horizon, "quantiles": args.quantiles,
                    "d_model": args.d_model, "n_heads": args.heads, "n_layers": args.layers, "dropout": args.dropout,
                    "backend": args.backend}
    model = create_model(args.name, **model_kwargs)
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"{args.dataset}: variables {list(data.series.names)}; windows "
        + ", ".join(f"{k} {len(v)}" for k, v in data.origins.items()))
    result = fit(model, data, config, log=say, checkpoint_dir=checkpoint_dir(args), resume=args.resume,
                 quiet=args.quiet)
    test, references = result["test"], result["references"]
    say(f"test (best epoch {result['best_epoch']}): pinball {test['pinball']:.4f}  coverage {test['coverage']:.3f}  "
        f"crossing {test['crossing_rate']:g}  | "
        + ", ".join(f"{name} {scores['test']['pinball']:.4f}" for name, scores in references.items()))
    save_trained(args.out, args.name, model_kwargs, model)
    write_metrics(args.out, report(model=args.name, dataset=args.dataset, config=config, model_kwargs=model_kwargs,
                                   args=args, n_parameters=sum(p.numel() for p in model.parameters()),
                                   result=result["fit_result"], monitor=MONITOR, final_split="test", final=test,
                                   references=references, extra={"variables": list(data.series.names)}))
    return 0
