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

__all__ = ["TrainBudget", "positive", "training_parser", "start_run", "options", "write_metrics", "mean_loss"]

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

    @classmethod
    def from_args(cls, args: argparse.Namespace, **extra):
        """The config of the shared options parsed by :func:`training_parser`, plus the family's ``extra`` fields."""
        return cls(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, device=args.device, **extra)


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


def training_parser(names: Sequence[str], datasets: Sequence[str], default_dataset: str, description: str, *,
                    epochs: int = 5, steps_per_epoch: int = 100, batch_size: int = 64,
                    lr: float = 3e-3) -> argparse.ArgumentParser:
    """A parser with NAME and the shared options; the defaults of the budget are the family's."""
    parser = argparse.ArgumentParser(prog="python -m tempattn.models", description=description)
    parser.add_argument("name", choices=list(names))
    parser.add_argument("--dataset", choices=list(datasets), default=default_dataset)
    parser.add_argument("--epochs", type=positive(int), default=epochs)
    parser.add_argument("--steps-per-epoch", type=positive(int), default=steps_per_epoch)
    parser.add_argument("--batch-size", type=positive(int), default=batch_size)
    parser.add_argument("--lr", type=positive(float), default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="tempattn operator backend")
    parser.add_argument("--threads", type=positive(int), default=None,
                        help="torch CPU threads (default: torch's choice; 1 is often fastest for small models)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="directory for metrics.json")
    return parser


def start_run(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and seed torch with ``--seed``."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def options(args: argparse.Namespace) -> dict:
    """The parsed options as JSON-ready values."""
    return {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}


def write_metrics(out: Optional[pathlib.Path], report: dict) -> None:
    """Write ``report`` to ``out/metrics.json`` (nothing when ``out`` is None)."""
    if out is None:
        return
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
