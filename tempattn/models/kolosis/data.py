"""Data for the kolosis language models: a synthetic source with known optimum, and character corpora.

Synthetic ground truth: :class:`GeometricEchoSource`. Each sequence starts with a uniform token;
every later token ``x_t`` is, with probability ``copy_prob``, a copy of ``x_{t-L}`` where the lag
``L`` is geometric with ratio ``decay`` truncated to the available history (``P(L = l) ∝
decay^(l-1)``, ``1 <= l <= t``), and otherwise a fresh uniform token. The Bayes-optimal next-token
distribution is therefore

    p(x_t = v | x_<t) = (1 - copy_prob) / V + copy_prob · Σ_{l=1..t} w_t(l) · [x_{t-l} = v],
    w_t(l) = decay^(l-1) / Σ_{m=1..t} decay^(m-1),

a decay-weighted average over the whole history: exactly what one head of exponential-decay
attention with ``γ = decay`` and flat content scores computes. :meth:`GeometricEchoSource.oracle_nll`
gives its loss (the achievable optimum); ``log V`` is the unigram loss.

Real text (docs/models.md): ``"shakespeare"`` and ``"alice"`` through :mod:`tempattn.models.common.text`,
and ``"austen"``: Jane Austen's six novels from the Debian package ``r-cran-janeaustenr``, an R
lazy-load database (``Rdata.rdx``: gzip'd serialized index of ``(offset, length)`` per object;
``Rdata.rdb``: each object a 4-byte length and a zlib stream of R's XDR serialization) read by the
small parser below. Every corpus is split contiguously (the last ``val_fraction`` is validation)
and validation windows never overlap training text.
"""
import dataclasses
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ...data import Package, extract_members
from ...data.rdata import read_lazy_load
from ..common.lm import unigram_cross_entropy
from ..common.text import CharVocab, load_text, random_windows, split_ids

__all__ = ["DATASETS", "GeometricEchoSource", "truncated_geometric_lags", "EchoTask", "TextTask",
           "load_austen", "load_task"]

DATASETS = ("shakespeare", "alice", "austen", "synthetic")

_AUSTEN = Package("r-cran-janeaustenr", "1.0.0-1", "deb",
                  "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95")
_AUSTEN_DIR = "./usr/lib/R/site-library/janeaustenr/data/"
# the order of janeaustenr::austen_books() (publication order)
AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")


# ---- synthetic source ------------------------------------------------------------------------

def truncated_geometric_lags(history: Tensor, decay: float, uniform: Tensor) -> Tensor:
    """Lags ``L`` in ``[1, history]`` with ``P(L = l) ∝ decay^(l-1)``, by inverting the CDF.

    ``history``: long tensor of available history lengths (>= 1); ``uniform``: same shape, in [0, 1).
    ``F(l) = (1 - decay^l) / (1 - decay^history)``; the lag is the smallest ``l`` with ``F(l) > u``.
    """
    mass = 1.0 - decay ** history.double()
    lags = torch.floor(torch.log1p(-uniform.double() * mass) / math.log(decay)).long() + 1
    return torch.minimum(lags.clamp(min=1), history)


@dataclasses.dataclass(frozen=True)
class GeometricEchoSource:
    """Tokens that echo an earlier token at a geometric lag (see the module docstring).

    Args:
        vocab: number of symbols ``V`` (>= 2).
        copy_prob: probability that a token is an echo, in ``[0, 1]``.
        decay: ratio of the lag distribution, in ``(0, 1)``; the mean lag is about ``1 / (1 - decay)``.
    """
    vocab: int = 16
    copy_prob: float = 0.8
    decay: float = 0.7

    def __post_init__(self):
        if isinstance(self.vocab, bool) or not isinstance(self.vocab, int) or self.vocab < 2:
            raise ValueError(f"GeometricEchoSource: `vocab` must be an int >= 2, got {self.vocab!r}; "
                             "hint: the number of symbols, e.g. 16")
        if not 0.0 <= self.copy_prob <= 1.0:
            raise ValueError(f"GeometricEchoSource: `copy_prob` must be in [0, 1], got {self.copy_prob!r}; "
                             "hint: the probability that a token echoes an earlier one, e.g. 0.8")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"GeometricEchoSource: `decay` must be in (0, 1), got {self.decay!r}; "
                             "hint: the lag ratio; the mean lag is about 1 / (1 - decay)")

    def sample(self, n: int, length: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(n, length)`` long sequences, each started afresh."""
        fresh = torch.randint(0, self.vocab, (n, length), generator=generator)
        copies = torch.rand(n, length, generator=generator) < self.copy_prob
        uniform = torch.rand(n, length, generator=generator)
        out = fresh.clone()
        rows = torch.arange(n)
        for t in range(1, length):
            lags = truncated_geometric_lags(torch.full((n,), t), self.decay, uniform[:, t])
            out[:, t] = torch.where(copies[:, t], out[rows, t - lags], fresh[:, t])
        return out

    def lag_weights(self, length: int) -> Tensor:
        """``(length, length)`` float64 ``W[t, j] = w_t(t - j)`` for ``j < t`` (row 0 is zero)."""
        t = torch.arange(length, dtype=torch.float64)
        lag = t[:, None] - t[None, :]
        weights = torch.where(lag >= 1, self.decay ** (lag - 1).clamp(min=0), torch.zeros(()))
        return weights / weights.sum(-1, keepdim=True).clamp(min=1e-300)

    def next_token_probs(self, seqs: Tensor) -> Tensor:
        """``(n, length - 1, V)`` float64 Bayes-optimal ``p(x_t | x_<t)`` for ``t = 1 .. length - 1``."""
        length = seqs.shape[1]
        onehot = torch.nn.functional.one_hot(seqs, self.vocab).double()       # (n, T, V)
        echo = self.lag_weights(length) @ onehot                               # (n, T, V)
        probs = (1.0 - self.copy_prob) / self.vocab + self.copy_prob * echo
        return probs[:, 1:]

    def oracle_nll(self, seqs: Tensor) -> float:
        """Mean Bayes-optimal loss (nats) of predicting ``seqs[:, 1:]`` from their prefixes."""
        probs = self.next_token_probs(seqs)
        picked = probs.gather(-1, seqs[:, 1:, None]).squeeze(-1)
        return float(-picked.log().mean())


# ---- tasks: what the training loop consumes ----------------------------------------------------

@dataclasses.dataclass
class EchoTask:
    """Fresh :class:`GeometricEchoSource` sequences for training, a fixed seeded set for validation."""
    source: GeometricEchoSource
    context: int
    val_sequences: int = 256
    seed: int = 0

    def __post_init__(self):
        # `context` inputs predict `context` targets: sequences of context + 1 tokens
        val = self.source.sample(self.val_sequences, self.context + 1, torch.Generator().manual_seed(self.seed + 1))
        self.val_x, self.val_y = val[:, :-1], val[:, 1:]
        self.references = {"oracle_nll": self.source.oracle_nll(val), "unigram_nll": math.log(self.source.vocab)}

    @property
    def vocab_size(self) -> int:
        return self.source.vocab

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        seqs = self.source.sample(batch_size, self.context + 1, generator)
        return seqs[:, :-1], seqs[:, 1:]


@dataclasses.dataclass
class TextTask:
    """Character windows: random ones of the training text, fixed evenly spaced ones of the validation text.

    ``references["unigram_nll"]``: the validation loss of the add-one unigram model fitted on train.
    """
    train_ids: Tensor
    val_ids: Tensor
    vocab: CharVocab
    context: int
    val_windows: int = 256

    def __post_init__(self):
        if len(self.val_ids) <= self.context:
            raise ValueError(f"TextTask: the validation text ({len(self.val_ids)} chars) must be longer than "
                             f"`context` = {self.context}; hint: use a smaller --context")
        last_start = len(self.val_ids) - self.context - 1
        n = min(self.val_windows, last_start // self.context + 1)  # never overlapping
        starts = torch.linspace(0, last_start, n).long()
        windows = self.val_ids[starts[:, None] + torch.arange(self.context + 1)]
        self.val_x, self.val_y = windows[:, :-1], windows[:, 1:]
        self.references = {"unigram_nll": unigram_cross_entropy(self.train_ids, self.val_ids, self.vocab.size)}

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        return random_windows(self.train_ids, batch_size, self.context, generator)


# ---- Jane Austen (R's lazy-load database of the janeaustenr package) --------------------------

def load_austen() -> str:
    """Jane Austen's six novels, in publication order, one line of the original per line."""
    index_path, db_path = extract_members(_AUSTEN, [_AUSTEN_DIR + "Rdata.rdx", _AUSTEN_DIR + "Rdata.rdb"])
    novels = read_lazy_load(index_path.read_bytes(), db_path.read_bytes(), AUSTEN_NOVELS)
    return "\n".join("\n".join(line or "" for line in novels[name]) for name in AUSTEN_NOVELS)


def load_corpus(name: str) -> str:
    return load_austen() if name == "austen" else load_text(name)


def load_task(dataset: str, context: int, *, val_fraction: float = 0.1, val_windows: int = 256, seed: int = 0):
    """The :class:`TextTask` of a corpus, or the :class:`EchoTask` for ``"synthetic"``."""
    if dataset not in DATASETS:
        raise ValueError(f"load_task: `dataset` must be one of {DATASETS}, got {dataset!r}; "
                         "hint: 'synthetic' needs no download")
    if dataset == "synthetic":
        return EchoTask(GeometricEchoSource(), context, val_sequences=val_windows, seed=seed)
    text = load_corpus(dataset)
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = split_ids(vocab.encode(text), val_fraction)
    return TextTask(train_ids, val_ids, vocab, context, val_windows)
