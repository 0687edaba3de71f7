"""Training, evaluation and metrics of the character models; ``python -m tempattn.models char_lm ...``.

Metrics (validation, per character): ``loss`` = mean negative log-likelihood in nats,
``perplexity`` = exp(loss), ``bpc`` = loss / ln 2 (bits per character). The trivial baseline is
the unigram model of the training text (add-one smoothed) scored on the validation text.
"""
import argparse
import dataclasses
import math
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import DataUnavailable
from ..common.lm import lr_factor, unigram_cross_entropy
from ..common.cli import TrainBudget, checkpoint_dir, positive, report, start_run, training_parser, write_metrics
from ..common.trainer import FitResult, fit, is_main_process, save_trained
from ..common.text import random_windows
from .data import DATASETS, CharCorpus, load_dataset
from .model import CharLanguageModel, CharTransformerLM, build_char_lm, build_char_lstm, matched_lstm_hidden

__all__ = ["char_metrics", "unigram_cross_entropy", "evaluation_windows", "evaluate", "lr_factor", "TrainConfig",
           "fit_model", "train", "main"]

MODEL_NAMES = ("char_lm", "char_lstm")
SAMPLE_TEMPERATURE, SAMPLE_TOP_P = 0.8, 0.9


# ---- metrics ------------------------------------------------------------------------------------------

def char_metrics(total_nll: float, n_chars: int) -> Dict[str, float]:
    """``{"loss", "perplexity", "bpc"}`` from the summed NLL (nats) over ``n_chars`` predicted characters."""
    if n_chars <= 0:
        raise ValueError(f"char_metrics: `n_chars` must be > 0, got {n_chars}; hint: evaluate on non-empty text")
    loss = total_nll / n_chars
    return {"loss": loss, "perplexity": math.exp(loss), "bpc": loss / math.log(2.0)}


def evaluation_windows(ids: Tensor, length: int) -> Tuple[Tensor, Tensor]:
    """Non-overlapping ``(x, y)`` windows ``(N, length)`` of ``ids (n,)``, ``y`` shifted by one.

    Every character after the first is predicted once, except the last ``(n - 1) % length``
    (too few for a full window).
    """
    n_windows = (len(ids) - 1) // length
    if n_windows == 0:
        raise ValueError(f"evaluation_windows: need more than length={length} ids, got {len(ids)}; "
                         "hint: use a shorter context or more validation text")
    used = n_windows * length
    return ids[:used].view(n_windows, length), ids[1:used + 1].view(n_windows, length)


@torch.no_grad()
def evaluate(model: CharLanguageModel, ids: Tensor, context: int, batch_size: int = 64,
             device: str = "cpu") -> Dict[str, float]:
    """:func:`char_metrics` of ``model`` (eval mode) on windows of ``context`` characters of ``ids``."""
    x, y = evaluation_windows(ids, context)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        targets = y[start:start + batch_size].to(device)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"))
    model.train(was_training)
    return char_metrics(total, y.numel())


# ---- training -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig(TrainBudget):
    batch_size: int = 32
    context: int = 64
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: Optional[int] = None  # None: 10% of the steps
    max_eval_chars: int = 100_000   # validation is scored on its first max_eval_chars characters

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


MONITOR = "val_loss"


def _epoch_line(record: Dict[str, float], epochs: int) -> str:
    return (f"epoch {record['epoch']}/{epochs}  train_loss {record['train_loss']:.4f}  "
            f"val_loss {record['val_loss']:.4f}  "
            f"val_ppl {record['val_perplexity']:.3f}  val_bpc {record['val_bpc']:.4f}  ({record['seconds']:.1f} s)")


def fit_model(model: CharLanguageModel, corpus: CharCorpus, config: TrainConfig,
              log: Optional[Callable[[str], None]] = None, **options) -> FitResult:
    """Train ``model`` with AdamW (warm-up + cosine schedule) in the shared loop; the best epoch (lowest
    validation loss) is restored. ``options``: checkpoint_dir, resume, quiet."""
    total = config.total_steps
    warmup = max(1, total // 10) if config.warmup_steps is None else config.warmup_steps
    val_ids = corpus.val[:config.max_eval_chars + 1]
    device = config.device

    def loss(network, batch):
        x, y = batch
        return F.cross_entropy(network(x.to(device)).flatten(0, 1), y.to(device).flatten())

    def validate(m):
        val = evaluate(m, val_ids, config.context, config.batch_size, device)
        return {"val_loss": val["loss"], "val_perplexity": val["perplexity"], "val_bpc": val["bpc"]}

    return fit(model, config, sample=lambda g: random_windows(corpus.train, config.batch_size, config.context,
                                                              generator=g),
               loss=loss, evaluate=validate, monitor=MONITOR, timed=True,
               lr_lambda=lambda s: lr_factor(s, total, warmup, config.min_lr_ratio),
               log=None if log is None else (lambda r: log(_epoch_line(r, config.epochs))), **options)


def train(model: CharLanguageModel, corpus: CharCorpus, config: TrainConfig,
          log: Optional[Callable[[str], None]] = None, **options) -> List[Dict[str, float]]:
    """Train ``model`` (see :func:`fit_model`); one record per epoch.

    Each record: ``epoch``, ``train_loss``, ``val_loss``, ``val_perplexity``, ``val_bpc``, ``seconds``.
    Deterministic given ``config.seed`` and torch's global seed (model init, dropout seeds).
    """
    return fit_model(model, corpus, config, log, **options).history


# ---- command line -------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = training_parser(MODEL_NAMES, DATASETS, "alice",
                        "Train a character language model (char_lm) or its LSTM baseline.", config=TrainConfig)
    p.add_argument("--context", type=positive(int), default=64, help="characters per training/evaluation window")
    p.add_argument("--embed-dim", type=positive(int), default=64, help="embedding width")
    p.add_argument("--num-layers", type=positive(int), default=2, help="transformer blocks (char_lm)")
    p.add_argument("--num-heads", type=positive(int), default=4, help="attention heads (char_lm)")
    p.add_argument("--dropout", type=float, default=0.1, help="attention-probability dropout (char_lm)")
    p.add_argument("--lstm-layers", type=positive(int), default=1, help="LSTM layers (char_lstm)")
    p.add_argument("--hidden-size", type=positive(int), default=None,
                   help="LSTM width; default: the one matching char_lm's parameter count with the same options")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out for validation")
    p.add_argument("--max-eval-chars", type=positive(int), default=100_000,
                   help="validation characters scored per epoch")
    p.add_argument("--sample-chars", type=int, default=200, help="characters generated after training")
    p.add_argument("--prompt", default=None, help="generation prompt (default: the first 16 validation characters)")
    return p


def _char_lm_kwargs(args: argparse.Namespace, vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "context": args.context, "embed_dim": args.embed_dim,
            "num_heads": args.num_heads, "num_layers": args.num_layers, "dropout": args.dropout,
            "backend": args.backend}


def _model_kwargs(args: argparse.Namespace, vocab_size: int) -> dict:
    """``create_model(args.name, **kwargs)``'s arguments; the LSTM's width defaults to char_lm's parameter count."""
    if args.name == "char_lm":
        return _char_lm_kwargs(args, vocab_size)
    hidden = args.hidden_size
    if hidden is None:
        target = sum(p.numel() for p in CharTransformerLM(**_char_lm_kwargs(args, vocab_size)).parameters())
        hidden = matched_lstm_hidden(target, vocab_size, args.embed_dim, args.lstm_layers)
    return {"vocab_size": vocab_size, "embed_dim": args.embed_dim, "hidden_size": hidden,
            "num_layers": args.lstm_layers}


def _build(args: argparse.Namespace, vocab_size: int) -> CharLanguageModel:
    """The model ``args.name``; the LSTM's width defaults to char_lm's parameter count."""
    kwargs = _model_kwargs(args, vocab_size)
    return build_char_lm(**kwargs) if args.name == "char_lm" else build_char_lstm(**kwargs)


def _sample(model: CharLanguageModel, corpus: CharCorpus, args: argparse.Namespace) -> str:
    """``--sample-chars`` characters after the prompt at temperature 0.8, top-p 0.9 (seeded)."""
    prompt = corpus.vocab.decode(corpus.val[:16]) if args.prompt is None else args.prompt
    generator = torch.Generator(args.device).manual_seed(args.seed)
    ids = model.generate(corpus.vocab.encode(prompt).to(args.device), args.sample_chars,
                         temperature=SAMPLE_TEMPERATURE, top_p=SAMPLE_TOP_P, generator=generator)
    return corpus.vocab.decode(ids.cpu())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train ``NAME`` on ``--dataset``, print one line per epoch and a sample; write ``--out/metrics.json``."""
    args = _parser().parse_args(argv)
    start_run(args)
    try:
        corpus = load_dataset(args.dataset, args.val_fraction, args.seed)
    except DataUnavailable as exc:
        print(f"{args.dataset}: could not fetch the data: {exc}", file=sys.stderr)
        return 1
    model_kwargs = _model_kwargs(args, corpus.vocab.size)
    model = _build(args, corpus.vocab.size).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    baseline = unigram_cross_entropy(corpus.train, corpus.val[:args.max_eval_chars + 1], corpus.vocab.size)
    optimum = "" if corpus.optimum is None else f", optimum (entropy rate) {corpus.optimum:.4f}"
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"{args.name} on {args.dataset}: {n_params} parameters, vocab {corpus.vocab.size}, "
        f"{len(corpus.train)} train / {len(corpus.val)} val chars; unigram val_loss {baseline:.4f}{optimum}")
    config = TrainConfig.from_args(args, context=args.context, max_eval_chars=args.max_eval_chars)
    result = fit_model(model, corpus, config, log=say, checkpoint_dir=checkpoint_dir(args), resume=args.resume,
                       quiet=args.quiet)
    best = result.history[result.best_epoch - 1]
    final = {"loss": best["val_loss"], "perplexity": best["val_perplexity"], "bpc": best["val_bpc"]}
    sample = _sample(model, corpus, args)
    say(f"best: epoch {result.best_epoch}, val_loss {final['loss']:.4f}\n"
        f"sample (temperature {SAMPLE_TEMPERATURE}, top_p {SAMPLE_TOP_P}):\n{sample}")
    save_trained(args.out, args.name, model_kwargs, model)
    write_metrics(args.out, report(model=args.name, dataset=args.dataset, config=config, model_kwargs=model_kwargs,
                                   args=args, n_parameters=n_params, result=result, monitor=MONITOR,
                                   final_split="val", final=final,
                                   references={"unigram_val_loss": baseline, "optimum": corpus.optimum},
                                   extra={"sample": sample}))
    return 0
