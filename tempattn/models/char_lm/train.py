"""Training, evaluation and metrics of the character models; ``python -m tempattn.models char_lm ...``.

Metrics (validation, per character): ``loss`` = mean negative log-likelihood in nats,
``perplexity`` = exp(loss), ``bpc`` = loss / ln 2 (bits per character). The trivial baseline is
the unigram model of the training text (add-one smoothed) scored on the validation text.
"""
import argparse
import dataclasses
import math
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import DataUnavailable
from ..common.lm import lr_factor, unigram_cross_entropy
from ..common.cli import TrainBudget, mean_loss, options, positive, start_run, training_parser, write_metrics
from ..common.text import random_windows
from .data import DATASETS, CharCorpus, load_dataset
from .model import CharLanguageModel, CharTransformerLM, build_char_lm, build_char_lstm, matched_lstm_hidden

__all__ = ["char_metrics", "unigram_cross_entropy", "evaluation_windows", "evaluate", "lr_factor", "TrainConfig",
           "train", "main"]

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
    max_eval_chars: int = 100_000   # validation is scored on its first max_eval_chars characters

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def _train_epoch(model: CharLanguageModel, corpus: CharCorpus, config: TrainConfig, optimizer, scheduler,
                 windows: torch.Generator) -> float:
    """One epoch of ``steps_per_epoch`` updates on random training windows; the mean training loss."""
    model.train()
    losses = []
    for _ in range(config.steps_per_epoch):
        x, y = random_windows(corpus.train, config.batch_size, config.context, generator=windows)
        logits = model(x.to(config.device))
        loss = F.cross_entropy(logits.flatten(0, 1), y.to(config.device).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
    return mean_loss(losses)


def train(model: CharLanguageModel, corpus: CharCorpus, config: TrainConfig,
          log: Optional[Callable[[str], None]] = None) -> List[Dict[str, float]]:
    """Train ``model`` with AdamW (warm-up + cosine schedule); one record per epoch.

    Each record: ``epoch``, ``train_loss``, ``val_loss``, ``val_perplexity``, ``val_bpc``, ``seconds``.
    Deterministic given ``config.seed`` and torch's global seed (model init, dropout seeds).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.total_steps, warmup))
    windows = torch.Generator().manual_seed(config.seed)
    val_ids = corpus.val[:config.max_eval_chars + 1]
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(model, corpus, config, optimizer, scheduler, windows)
        val = evaluate(model, val_ids, config.context, config.batch_size, config.device)
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"],
                  "val_perplexity": val["perplexity"], "val_bpc": val["bpc"],
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if log is not None:
            log(f"epoch {epoch}/{config.epochs}  train_loss {train_loss:.4f}  val_loss {val['loss']:.4f}  "
                f"val_ppl {val['perplexity']:.3f}  val_bpc {val['bpc']:.4f}  ({record['seconds']:.1f} s)")
    return history


# ---- command line -------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = training_parser(MODEL_NAMES, DATASETS, "alice",
                        "Train a character language model (char_lm) or its LSTM baseline.", batch_size=32)
    p.add_argument("--context", type=positive(int), default=64, help="characters per training/evaluation window")
    p.add_argument("--embed-dim", type=positive(int), default=64)
    p.add_argument("--num-layers", type=positive(int), default=2, help="transformer blocks (char_lm)")
    p.add_argument("--num-heads", type=positive(int), default=4)
    p.add_argument("--dropout", type=float, default=0.1, help="attention-probability dropout (char_lm)")
    p.add_argument("--lstm-layers", type=positive(int), default=1)
    p.add_argument("--hidden-size", type=positive(int), default=None,
                   help="LSTM width; default: the one matching char_lm's parameter count with the same options")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-eval-chars", type=positive(int), default=100_000)
    p.add_argument("--sample-chars", type=int, default=200)
    p.add_argument("--prompt", default=None, help="generation prompt (default: the first 16 validation characters)")
    return p


def _char_lm_kwargs(args: argparse.Namespace, vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "context": args.context, "embed_dim": args.embed_dim,
            "num_heads": args.num_heads, "num_layers": args.num_layers, "dropout": args.dropout,
            "backend": args.backend}


def _build(args: argparse.Namespace, vocab_size: int) -> CharLanguageModel:
    """The model ``args.name``; the LSTM's width defaults to char_lm's parameter count."""
    if args.name == "char_lm":
        return build_char_lm(**_char_lm_kwargs(args, vocab_size))
    hidden = args.hidden_size
    if hidden is None:
        target = sum(p.numel() for p in CharTransformerLM(**_char_lm_kwargs(args, vocab_size)).parameters())
        hidden = matched_lstm_hidden(target, vocab_size, args.embed_dim, args.lstm_layers)
    return build_char_lstm(vocab_size=vocab_size, embed_dim=args.embed_dim, hidden_size=hidden,
                           num_layers=args.lstm_layers)


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
    model = _build(args, corpus.vocab.size).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    baseline = unigram_cross_entropy(corpus.train, corpus.val[:args.max_eval_chars + 1], corpus.vocab.size)
    optimum = "" if corpus.optimum is None else f", optimum (entropy rate) {corpus.optimum:.4f}"
    print(f"{args.name} on {args.dataset}: {n_params} parameters, vocab {corpus.vocab.size}, "
          f"{len(corpus.train)} train / {len(corpus.val)} val chars; unigram val_loss {baseline:.4f}{optimum}")
    config = TrainConfig.from_args(args, context=args.context, max_eval_chars=args.max_eval_chars)
    history = train(model, corpus, config, log=print)
    sample = _sample(model, corpus, args)
    print(f"sample (temperature {SAMPLE_TEMPERATURE}, top_p {SAMPLE_TOP_P}):\n{sample}")
    write_metrics(args.out, {"model": args.name, "dataset": args.dataset, "parameters": n_params,
                             "options": options(args), "unigram_val_loss": baseline, "optimum": corpus.optimum,
                             "epochs": history, "final": history[-1], "sample": sample})
    return 0
