"""The options every family's ``python -m tempattn.models NAME`` shares, and its run-time set-up.

Each family's ``train.main`` builds its parser with :func:`training_parser` (name, dataset and
budget, optimiser, seed, device, tempattn backend, CPU threads, output directory), adds its own
model options, then calls :func:`start_run`, builds its ``TrainConfig`` (a :class:`TrainBudget`)
with ``from_args`` and finally calls :func:`write_metrics`.
"""
import argparse
import dataclasses
import json
import math
import pathlib
from typing import Callable, Optional, Sequence

import torch

__all__ = ["TrainBudget", "positive", "non_negative", "training_parser", "start_run", "checkpoint_dir", "options",
           "report", "REPORT_KEYS", "write_metrics", "mean_loss"]

BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")


@dataclasses.dataclass(frozen=True)
class TrainBudget:
    """What every family's ``TrainConfig`` starts from: ``epochs`` x ``steps_per_epoch`` optimiser
    steps on batches of ``batch_size``, learning rate ``lr``, the ``seed`` and the ``device``."""
    epochs: int = 5
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"
    weight_decay: float = 0.0
    grad_clip: float = 1.0          # max gradient norm; 0 = no clipping
    warmup_steps: int = 0           # linear warm-up, then a cosine down to min_lr_ratio x lr
    min_lr_ratio: float = 0.1
    patience: int = 0               # early stopping: epochs without validation improvement; 0 = never
    amp: bool = False               # bfloat16 autocast on CUDA (ignored on the CPU)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **extra):
        """The config of the shared options parsed by :func:`training_parser`, plus the family's ``extra`` fields."""
        shared = {name: getattr(args, name) for name in ("weight_decay", "grad_clip", "warmup_steps", "min_lr_ratio",
                                                         "patience", "amp") if getattr(args, name, None) is not None}
        return cls(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, device=args.device, **{**shared, **extra})


def mean_loss(losses: Sequence[torch.Tensor]) -> float:
    """The mean of an epoch's detached per-step losses (0-d tensors), read from the device once per epoch
    rather than once per step (no ``.item()`` sync in the step); the same float as summing ``float(loss)``."""
    return sum(torch.stack(list(losses)).tolist()) / len(losses)


def positive(kind: type) -> Callable[[str], object]:
    """An argparse ``type`` accepting a positive, finite ``kind`` (int or float)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def non_negative(kind: type) -> Callable[[str], object]:
    """An argparse ``type`` accepting a finite ``kind`` >= 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a non-negative {kind.__name__}, got {text!r}")
        return value
    parse.__name__ = f"non-negative {kind.__name__}"
    return parse


def training_parser(names: Sequence[str], datasets: Sequence[str], default_dataset: str, description: str, *,
                    epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None,
                    batch_size: Optional[int] = None, lr: Optional[float] = None,
                    config: type = TrainBudget) -> argparse.ArgumentParser:
    """A parser with NAME and the shared options; the defaults are the family's ``config`` (a TrainBudget
    subclass) unless given here. ``--help`` shows every default."""
    fields = {f.name: f.default for f in dataclasses.fields(config)}
    pick = lambda given, name: fields[name] if given is None else given  # noqa: E731
    parser = argparse.ArgumentParser(prog="python -m tempattn.models", description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("name", choices=list(names), help="the model")
    parser.add_argument("--dataset", choices=list(datasets), default=default_dataset, help="training data")
    parser.add_argument("--epochs", type=positive(int), default=pick(epochs, "epochs"), help="epochs")
    parser.add_argument("--steps-per-epoch", type=positive(int), default=pick(steps_per_epoch, "steps_per_epoch"),
                        help="optimiser steps per epoch")
    parser.add_argument("--batch-size", type=positive(int), default=pick(batch_size, "batch_size"),
                        help="global batch (split over the processes under torchrun)")
    parser.add_argument("--lr", type=positive(float), default=pick(lr, "lr"), help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=non_negative(float), default=fields["weight_decay"],
                        help="AdamW weight decay")
    parser.add_argument("--grad-clip", type=non_negative(float), default=fields["grad_clip"],
                        help="max gradient norm (0: no clipping)")
    parser.add_argument("--warmup-steps", type=non_negative(int), default=fields["warmup_steps"],
                        help="linear warm-up steps before the cosine decay")
    parser.add_argument("--min-lr-ratio", type=non_negative(float), default=fields["min_lr_ratio"],
                        help="the cosine ends at this fraction of --lr")
    parser.add_argument("--patience", type=non_negative(int), default=fields["patience"],
                        help="early stopping after this many epochs without validation improvement (0: never)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA (ignored on the CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the batches")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="tempattn operator backend")
    parser.add_argument("--threads", type=positive(int), default=None,
                        help="torch CPU threads (None: torch's choice; 1 is often fastest for small models)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="directory for metrics.json, the best model (model.pt, model.json) and checkpoints/")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/checkpoints/last.pt (same options as the interrupted run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar within epochs")
    return parser


def start_run(args: argparse.Namespace) -> None:
    """Join the torchrun process group (if any), apply ``--threads`` and seed torch with ``--seed``.

    ``--resume`` without ``--out`` is a usage error (exit 2)."""
    from .trainer import distributed, is_main_process, shard_rows
    if getattr(args, "resume", False) and args.out is None:
        raise SystemExit("python -m tempattn.models: error: --resume needs --out (the directory of the earlier run)")
    distributed(args.device)
    try:
        shard_rows(args.batch_size)
    except ValueError as exc:  # every process exits 1; rank 0 says why
        raise SystemExit(f"python -m tempattn.models: error: {exc}" if is_main_process() else 1) from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def checkpoint_dir(args: argparse.Namespace) -> Optional[pathlib.Path]:
    """``--out/checkpoints`` (None without ``--out``)."""
    return None if args.out is None else pathlib.Path(args.out) / "checkpoints"


SCHEMA = 1
REPORT_KEYS = ("schema", "model", "dataset", "config", "model_kwargs", "options", "n_parameters", "epochs",
               "best_epoch", "stopped_early", "monitor", "final_split", "final", "references", "extra")


def report(*, model: str, dataset: str, config, model_kwargs: dict, args: argparse.Namespace, n_parameters: int,
           result, monitor: str, final_split: str, final: dict, references: Optional[dict] = None,
           extra: Optional[dict] = None) -> dict:
    """The one ``metrics.json`` schema of every family (keys :data:`REPORT_KEYS`).

    ``final`` holds the best epoch's metrics on ``final_split`` ("test", or "val" where a family has
    no test split); ``references`` the baselines / optima; ``extra`` anything family-specific."""
    return {"schema": SCHEMA, "model": model, "dataset": dataset, "config": dataclasses.asdict(config),
            "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()},
            "options": options(args), "n_parameters": int(n_parameters), "epochs": result.history,
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early, "monitor": monitor,
            "final_split": final_split, "final": {final_split: final}, "references": references or {},
            "extra": extra or {}}


def options(args: argparse.Namespace) -> dict:
    """The parsed options as JSON-ready values."""
    return {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}


def write_metrics(out: Optional[pathlib.Path], report: dict) -> None:
    """Write ``report`` to ``out/metrics.json`` (nothing when ``out`` is None, or off rank 0 under torchrun)."""
    from .trainer import is_main_process
    if out is None or not is_main_process():
        return
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
