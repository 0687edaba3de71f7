"""The one training loop of every model family (:func:`fit`), its checkpoints and the trained-model files.

A family describes its task with four callables and calls :func:`fit`:

- ``sample(generator)`` draws one *global* training batch with the dedicated batch generator;
- ``take(batch, rows)`` selects rows of a batch (this process's share under ``torchrun``;
  the default handles tensors, tuples/lists of them and objects with ``.subset(rows)``);
- ``loss(model, batch)`` returns the objective, or ``(objective, logged loss)``;
- ``evaluate(model)`` returns the epoch's validation fields (merged into the epoch record).

:func:`fit` provides AdamW with a warm-up + cosine schedule (:func:`~tempattn.models.common.lm.lr_factor`),
gradient clipping from the config, AMP (bfloat16 autocast) on CUDA when ``config.amp``, a tqdm bar
within epochs (quiet when stderr is not a terminal or ``quiet``), early stopping on the monitored
validation value (``config.patience`` epochs without improvement; 0 = never), the best epoch's
weights restored at the end, and checkpoints (model, optimizer, scheduler, RNG states, epoch,
history) in ``checkpoint_dir`` — ``last.pt`` every epoch and ``best.pt`` for the best — read back with
``torch.load(weights_only=True)`` by ``resume=True``; a resumed run continues exactly as the
uninterrupted one would have.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in ``DistributedDataParallel``
(gloo on CPU, NCCL on CUDA); every process draws the same global batch and trains on its
:class:`~torch.utils.data.DistributedSampler` share, so with the same global batch and seed the
run matches the single-process one. Logging, checkpoints and files happen on rank 0 only.
"""
import atexit
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .lm import lr_factor

try:  # optional: without tqdm there is simply no bar
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["FitResult", "fit", "train_step", "distributed", "rank", "world_size", "is_main_process", "save_trained",
           "load_trained", "shard_rows", "CHECKPOINT_LAST", "CHECKPOINT_BEST"]

CHECKPOINT_LAST, CHECKPOINT_BEST = "last.pt", "best.pt"
MODEL_FILE, MODEL_CONFIG_FILE = "model.pt", "model.json"


# ---- processes ----------------------------------------------------------------------------------

def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def is_main_process() -> bool:
    return rank() == 0


def distributed(device: str = "cpu") -> bool:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA); True if joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave_process_group)
    return True


def _leave_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard_rows(global_batch_size: int) -> Optional[Tensor]:
    """This process's rows of a global batch (a :class:`DistributedSampler` over its positions); None alone.

    Raises ValueError when the world size does not divide the batch.
    """
    world = world_size()
    if world == 1:
        return None
    if global_batch_size % world:
        raise ValueError(f"--batch-size {global_batch_size} is not divisible by the world size {world}; hint: use a "
                         f"global batch that is a multiple of the number of processes (nproc_per_node x nnodes)")
    sampler = torch.utils.data.DistributedSampler(range(global_batch_size), num_replicas=world, rank=rank(),
                                                  shuffle=False, drop_last=True)
    return torch.tensor(list(sampler), dtype=torch.long)


def _take_default(batch: Any, rows: Tensor) -> Any:
    if isinstance(batch, Tensor):
        return batch[rows.to(batch.device)]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take_default(part, rows) for part in batch)
    if hasattr(batch, "subset"):
        return batch.subset(rows)
    raise TypeError(f"fit: cannot select rows of a {type(batch).__name__} batch; hint: pass `take=`")


# ---- fitting ------------------------------------------------------------------------------------

@dataclasses.dataclass
class FitResult:
    """Every epoch's record, the best epoch (its weights are in the model), whether training stopped early."""
    history: List[Dict[str, Any]]
    best_epoch: int
    stopped_early: bool


def _monitored(record: Dict[str, Any], monitor: str) -> float:
    value: Any = record
    for part in monitor.split("."):
        value = value[part]
    return float(value)


def _rng_state(generator: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_state(model: nn.Module) -> Dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save(payload: Dict[str, Any], path: pathlib.Path) -> None:
    """Write atomically (a partial file never replaces a good checkpoint)."""
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: Union[str, pathlib.Path]) -> Dict[str, Any]:
    """A checkpoint written by :func:`fit`, read with ``torch.load(weights_only=True)``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; hint: --resume needs the --out of an earlier run that "
                                f"finished at least one epoch")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise RuntimeError(f"cannot read the checkpoint {path}: {exc}; hint: delete it to start over") from exc


def _progress(total: int, desc: str, quiet: bool):
    disable = quiet or _tqdm is None or not sys.stderr.isatty()
    if disable:
        return None
    return _tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, file=sys.stderr)


def train_step(network: nn.Module, optimizer: torch.optim.Optimizer, batch: Any,
               loss: Callable[[nn.Module, Any], Union[Tensor, Tuple[Tensor, Tensor]]], grad_clip: float,
               parameters=None, autocast: Callable[[], Any] = contextlib.nullcontext) -> Tensor:
    """One update: the loss under ``autocast``, backward, clipping to ``grad_clip`` (0: none), the optimiser step.

    Returns the detached logged loss (float32, left on the device: no per-step sync)."""
    with autocast():
        out = loss(network, batch)
    objective, logged = out if isinstance(out, tuple) else (out, out)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(network.parameters() if parameters is None else parameters, grad_clip)
    optimizer.step()
    return logged.detach().float()


def fit(model: nn.Module, config, *, sample: Callable[[torch.Generator], Any],
        loss: Callable[[nn.Module, Any], Union[Tensor, Tuple[Tensor, Tensor]]],
        evaluate: Callable[[nn.Module], Dict[str, Any]], monitor: str, mode: str = "min",
        take: Optional[Callable[[Any, Tensor], Any]] = None, train_key: str = "train_loss",
        log: Optional[Callable[[Dict[str, Any]], None]] = None, checkpoint_dir: Optional[pathlib.Path] = None,
        resume: bool = False, quiet: bool = False, timed: bool = False,
        lr_lambda: Optional[Callable[[int], float]] = None,
        seed_torch: bool = False) -> FitResult:
    """Train ``model`` in place with ``config`` (a :class:`~tempattn.models.common.cli.TrainBudget`).

    Each epoch: ``config.steps_per_epoch`` updates, then the record ``{"epoch", train_key, **evaluate(model)}``
    (plus ``"seconds"`` when ``timed``), passed to ``log`` on rank 0. ``monitor`` names the validation
    value of the record (dots into nested dicts, e.g. ``"val.pinball"``), lower is better for
    ``mode="min"``. ``lr_lambda`` overrides the schedule (default: ``lr_factor`` with the config's
    ``warmup_steps`` and ``min_lr_ratio``). ``seed_torch`` seeds torch's global RNG with ``config.seed``
    first (dropout, noise).
    """
    if mode not in ("min", "max"):
        raise ValueError(f"fit: `mode` must be 'min' or 'max', got {mode!r}")
    device = torch.device(config.device)
    if seed_torch:
        torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rows = shard_rows(config.batch_size)
    take = take or _take_default
    model.to(device)
    network: nn.Module = model
    if world_size() > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    if lr_lambda is None:
        warmup, floor = config.warmup_steps, config.min_lr_ratio
        lr_lambda = lambda step: lr_factor(step, total, warmup, floor)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    amp = bool(getattr(config, "amp", False)) and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    main_process = is_main_process()
    checkpoint_dir = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir)
    sign = 1.0 if mode == "min" else -1.0

    history: List[Dict[str, Any]] = []
    best_value, best_epoch, bad_epochs, start = math.inf, 0, 0, 1
    best_state: Optional[Dict[str, Tensor]] = None
    if resume:
        if checkpoint_dir is None:
            raise ValueError("fit: `resume` needs a checkpoint directory; hint: pass the --out of the earlier run")
        state = load_checkpoint(checkpoint_dir / CHECKPOINT_LAST)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        history, best_epoch, bad_epochs = list(state["history"]), int(state["best_epoch"]), int(state["bad_epochs"])
        best_value, start = float(state["best_value"]), int(state["epoch"]) + 1
        best_state = (state["model"] if best_epoch == state["epoch"]
                      else load_checkpoint(checkpoint_dir / CHECKPOINT_BEST)["model"])
    stopped_early = bool(resume and state.get("stopped_early"))
    if stopped_early:
        start = config.epochs + 1
    patience = int(getattr(config, "patience", 0) or 0)
    for epoch in range(start, config.epochs + 1):
        started = time.perf_counter()
        network.train()
        losses = []
        bar = _progress(config.steps_per_epoch, f"epoch {epoch}/{config.epochs}", quiet or not main_process)
        shown = time.perf_counter()
        for _ in range(config.steps_per_epoch):
            batch = sample(generator)
            if rows is not None:
                batch = take(batch, rows)
            logged = train_step(network, optimizer, batch, loss, config.grad_clip, model.parameters(), autocast)
            scheduler.step()
            losses.append(logged)
            if bar is not None:
                bar.update(1)
                if time.perf_counter() - shown > 0.5:  # the only per-step read of the loss, and only with a bar
                    bar.set_postfix(loss=f"{float(logged):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    shown = time.perf_counter()
        if bar is not None:
            bar.close()
        train_loss = sum(torch.stack(losses).tolist()) / len(losses)  # one device read per epoch
        if world_size() > 1:  # the mean over every process's share
            shared = torch.tensor([train_loss], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(shared)
            train_loss = float(shared) / world_size()
        record: Dict[str, Any] = {"epoch": epoch, train_key: train_loss}
        record.update(evaluate(model))
        if timed:
            record["seconds"] = time.perf_counter() - started
        history.append(record)
        value = sign * _monitored(record, monitor)
        if value < best_value or best_epoch == 0:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = _cpu_state(model)
        else:
            bad_epochs += 1
        stopped_early = patience > 0 and bad_epochs >= patience and epoch < config.epochs
        if main_process and checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            payload = {"epoch": epoch, "model": _cpu_state(model), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "rng": _rng_state(generator), "history": history,
                       "best_epoch": best_epoch, "best_value": best_value, "bad_epochs": bad_epochs,
                       "stopped_early": stopped_early}
            if best_epoch == epoch:
                _save(payload, checkpoint_dir / CHECKPOINT_BEST)
            _save(payload, checkpoint_dir / CHECKPOINT_LAST)  # last: a resume never finds best.pt older than it
        if main_process and log is not None:
            log(record)
        if stopped_early:
            if main_process and log is not None:
                print(f"early stop: no improvement of {monitor} for {patience} epochs (best epoch {best_epoch})",
                      flush=True)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, stopped_early=stopped_early)


# ---- trained-model files --------------------------------------------------------------------------

def save_trained(out: Optional[pathlib.Path], name: str, model_kwargs: Dict[str, Any], model: nn.Module) -> None:
    """``out/model.pt`` (``{"name", "kwargs", "state_dict"}``) and ``out/model.json`` (name and kwargs), rank 0 only.

    :func:`load_trained` (``create_model(name, **kwargs)`` + ``load_state_dict``) restores the model.
    """
    if out is None or not is_main_process():
        return
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()}
    _save({"name": name, "kwargs": kwargs, "state_dict": _cpu_state(model)}, out / MODEL_FILE)
    (out / MODEL_CONFIG_FILE).write_text(json.dumps({"name": name, "kwargs": kwargs}, indent=2))


def load_trained(path: Union[str, pathlib.Path], **overrides) -> nn.Module:
    """The model saved by :func:`save_trained` in the directory (or file) ``path``, in eval mode.

    ``overrides`` replace saved keyword arguments (e.g. ``backend="reference"``).
    """
    from .. import create_model
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(saved["name"], **{**saved["kwargs"], **overrides})
    model.load_state_dict(saved["state_dict"])
    return model.eval()
