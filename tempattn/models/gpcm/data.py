"""Response sequences: simulated GPCM students with known parameters, and real test data.

A student's sequence is the items they answered, in test order, with their response category.
Missing responses (NaN in a response matrix, ~1% of the SweSAT answers) are treated as *not
answered*: :func:`sequences_from_matrix` drops them, so they are neither model input nor target.
Sequences are right-padded; ``padding_mask`` is True at padding.

Real data (docs/models.md), fetched once and cached under ``data/`` (:mod:`tempattn.data`):

- ``math1``, ``math2``: Swedish national mathematics test, 1008 and 1401 students × 28 items, partial
  credit 0–4 (K = 5); each item's number of categories is its maximum score + 1.
- ``swesat_quant``, ``swesat_verb``: Swedish SAT 2022B, 5000 students × 80 multiple-choice items;
  the chosen option is scored against the answer key (``*_correct.txt``, options numbered from 1):
  1 = correct, 0 = incorrect (K = 2). These four come from the ``irtorch==0.5.6`` wheel on PyPI.
- ``mathexam14w``: a university maths exam of 2014, 729 students × 13 items, credits 0/1/2
  (K = 3), the ``MathExam14W`` data frame of the ``r-cran-psychotools`` Debian package, read from
  its ``.rda`` file by :mod:`tempattn.data.rdata`.

Students are split into disjoint train / validation / test sets by a seeded permutation
(:func:`split_by_student`), so no student's responses inform the model that is scored on them.
"""
import dataclasses
import pickle
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import DataCorrupted, Package, extract_member, read_text_strict
from ...data.rdata import NA_INTEGER, read_rda
from .model import gpcm_log_probs

__all__ = ["ResponseSequences", "sequences_from_matrix", "SyntheticGPCM", "simulate_gpcm", "true_log_probs",
           "oracle_log_probs", "DATASETS", "load_dataset", "Split", "split_by_student"]

_IRTORCH = Package("irtorch", "0.5.6", "wheel", "a1ee144200a04f31cfd831a7dc749400f5078ab03c559582d8d3545f0fcd4970")
_DATASETS_DIR = "irtorch/datasets"
_PSYCHOTOOLS = Package("r-cran-psychotools", "0.7-2-1", "deb",
                       "57d19f4962deb7cf9d2973d38b0f0127fd96544218fc38bae688dde0b4eceedb")
_MATH_EXAM = "./usr/lib/R/site-library/psychotools/data/MathExam14W.rda"
DATASETS = ("math1", "math2", "swesat_quant", "swesat_verb", "mathexam14w")
"""Real dataset names accepted by :func:`load_dataset`."""


@dataclasses.dataclass(frozen=True)
class ResponseSequences:
    """Right-padded response sequences of ``S`` students, ``T`` steps.

    ``items (S, T)`` long item ids, ``responses (S, T)`` long categories (0 at padding),
    ``padding_mask (S, T)`` bool (True = padding); ``n_items``, ``n_categories`` (``K``) and
    optionally ``item_categories`` (each item's number of categories, ``<= K``).
    """
    items: Tensor
    responses: Tensor
    padding_mask: Tensor
    n_items: int
    n_categories: int
    item_categories: Optional[Tuple[int, ...]] = None

    def __len__(self) -> int:
        return self.items.shape[0]

    def subset(self, index: Tensor) -> "ResponseSequences":
        """The students ``index``, with trailing all-padding steps dropped."""
        padding = self.padding_mask[index]
        length = int((~padding).sum(dim=1).max()) if len(index) else 0
        return dataclasses.replace(self, items=self.items[index, :length], responses=self.responses[index, :length],
                                   padding_mask=padding[:, :length])


def _check_matrix(matrix: Tensor, n_categories: int) -> None:
    if not isinstance(matrix, Tensor) or not matrix.is_floating_point() or matrix.dim() != 2:
        raise TypeError(f"sequences_from_matrix: `matrix` must be a 2-D float tensor (students, items) with NaN for "
                        f"missing, got {matrix!r:.80}; hint: `torch.as_tensor(data, dtype=torch.float32)`")
    answered = matrix[~torch.isnan(matrix)]
    bad = (answered < 0) | (answered >= n_categories) | (answered != answered.round())
    if bool(bad.any()):
        raise ValueError(f"sequences_from_matrix: `matrix` must hold integer categories in [0, {n_categories}) or NaN, "
                         f"got e.g. {answered[bad][:5].tolist()}; hint: rescore the responses or raise n_categories")


def sequences_from_matrix(matrix: Tensor, n_categories: int,
                          item_categories: Optional[Tuple[int, ...]] = None) -> ResponseSequences:
    """Sequences of the answered items, in column (test) order, from a ``(students, items)`` matrix.

    NaN entries are unanswered items: they are left out of the student's sequence. Students who
    answered nothing are dropped.
    """
    _check_matrix(matrix, n_categories)
    answered = ~torch.isnan(matrix)
    # answered columns first, each group in test order
    order = torch.sort((~answered).to(torch.int8), dim=1, stable=True).indices
    keep = answered.any(dim=1)
    padding = ~answered.gather(1, order)[keep]
    responses = matrix.gather(1, order)[keep].nan_to_num(0.0).long()
    length = int((~padding).sum(dim=1).max()) if bool(keep.any()) else 0
    return ResponseSequences(order[keep, :length], responses[:, :length], padding[:, :length], matrix.shape[1],
                             n_categories, item_categories)


class Split(NamedTuple):
    """Disjoint student index tensors."""
    train: Tensor
    val: Tensor
    test: Tensor


def split_by_student(n_students: int, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """A seeded random split of ``range(n_students)`` into disjoint train / val / test students."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"split_by_student: `val_fraction` + `test_fraction` must be positive and < 1, got "
                         f"{val_fraction} + {test_fraction}; hint: the defaults are 0.1 + 0.1")
    n_val, n_test = max(1, round(n_students * val_fraction)), max(1, round(n_students * test_fraction))
    if n_students - n_val - n_test < 1:
        raise ValueError(f"split_by_student: `n_students` must leave training students, got {n_students}; "
                         "hint: use more students")
    order = torch.randperm(n_students, generator=torch.Generator().manual_seed(seed))
    return Split(order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test])


@dataclasses.dataclass(frozen=True)
class SyntheticGPCM:
    """Simulated students with their true parameters.

    ``theta (S, T)`` true ability at each step; ``alpha (I,)`` discriminations, ``beta (I, K - 1)``
    ordered thresholds; ability moves by ``learning_gain + drift_std · N(0, 1)`` per step.
    """
    sequences: ResponseSequences
    theta: Tensor
    alpha: Tensor
    beta: Tensor
    drift_std: float
    learning_gain: float


def _true_item_parameters(n_items: int, n_categories: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``α ~ U(0.8, 2.2)``; thresholds centred on a difficulty ``~ N(0, 1)``, ``U(0.4, 1.4)`` apart."""
    alpha = 0.8 + 1.4 * torch.rand(n_items, generator=generator)
    steps = 0.4 + torch.rand(n_items, n_categories - 2, generator=generator)
    offsets = torch.cat([torch.zeros(n_items, 1), torch.cumsum(steps, dim=1)], dim=1)
    difficulty = torch.randn(n_items, 1, generator=generator)
    return alpha, difficulty + offsets - offsets.mean(dim=1, keepdim=True)


def simulate_gpcm(n_students: int = 1000, n_items: int = 20, n_categories: int = 3, *, min_length: Optional[int] = None,
                  drift_std: float = 0.0, learning_gain: float = 0.0, seed: int = 0) -> SyntheticGPCM:
    """Students ``θ_0 ~ N(0, 1)`` answer a random order of the ``n_items`` items, stopping after a
    length uniform in ``[min_length, n_items]`` (default ``n_items // 2``); responses are drawn from the
    GPCM with the true item parameters."""
    if n_categories < 2 or n_items < 1 or n_students < 1:
        raise ValueError(f"simulate_gpcm: need n_students >= 1, n_items >= 1, n_categories >= 2, got "
                         f"{n_students}, {n_items}, {n_categories}; hint: e.g. simulate_gpcm(1000, 20, 3)")
    min_length = max(1, n_items // 2) if min_length is None else min_length
    if not 1 <= min_length <= n_items:
        raise ValueError(f"simulate_gpcm: `min_length` must be in [1, n_items={n_items}], got {min_length}; "
                         "hint: leave it None for n_items // 2")
    generator = torch.Generator().manual_seed(seed)
    alpha, beta = _true_item_parameters(n_items, n_categories, generator)
    items = torch.argsort(torch.rand(n_students, n_items, generator=generator), dim=1)
    lengths = torch.randint(min_length, n_items + 1, (n_students,), generator=generator)
    padding = torch.arange(n_items) >= lengths[:, None]
    theta = _ability_paths(n_students, n_items, drift_std, learning_gain, generator)
    probs = gpcm_log_probs(theta, alpha[items], beta[items]).exp()
    responses = torch.multinomial(probs.reshape(-1, n_categories), 1, generator=generator).reshape(items.shape)
    sequences = ResponseSequences(items, responses.masked_fill(padding, 0), padding, n_items, n_categories)
    return SyntheticGPCM(sequences, theta, alpha, beta, float(drift_std), float(learning_gain))


def _ability_paths(n_students: int, length: int, drift_std: float, learning_gain: float,
                   generator: torch.Generator) -> Tensor:
    """``(S, T)`` abilities: ``θ_0 ~ N(0, 1)``, then ``θ_t = θ_{t-1} + learning_gain + drift_std · N(0, 1)``."""
    start = torch.randn(n_students, 1, generator=generator)
    increments = learning_gain + drift_std * torch.randn(n_students, length - 1, generator=generator)
    return start + F.pad(torch.cumsum(increments, dim=1), (1, 0))


def true_log_probs(sim: SyntheticGPCM) -> Tensor:
    """``(S, T, K)`` GPCM log probabilities with the *true* abilities: a floor no predictor can reach."""
    items = sim.sequences.items
    return gpcm_log_probs(sim.theta, sim.alpha[items], sim.beta[items])


def _transition(sim: SyntheticGPCM, grid: Tensor) -> Optional[Tensor]:
    """``(G, G)`` one step of ability drift on the grid (rows sum to 1); None without drift."""
    if sim.drift_std == 0.0 and sim.learning_gain == 0.0:
        return None
    std = max(sim.drift_std, float(grid[1] - grid[0]))  # at least one grid step, so the kernel is resolved
    return torch.softmax(-0.5 * ((grid[None, :] - grid[:, None] - sim.learning_gain) / std) ** 2, dim=1)


def oracle_log_probs(sim: SyntheticGPCM, grid_size: int = 121) -> Tensor:
    """``(S, T, K)`` Bayes-optimal predictions given the true item parameters and ability prior.

    ``p(r_t | r_<t) = ∫ P_GPCM(r_t | θ) p(θ | r_<t) dθ``, filtered on a grid of ``grid_size``
    abilities in [-6, 6] (the drift enters as a Gaussian transition, widened to one grid step).
    This is the best any model that does not know the abilities can do (up to grid error).
    """
    seq = sim.sequences
    grid = torch.linspace(-6.0, 6.0, grid_size, dtype=torch.float64)
    # (I, G, K): every item's category probabilities at every grid ability
    likelihood = gpcm_log_probs(grid[None, :], sim.alpha[:, None].double(), sim.beta[:, None].double()).exp()
    transition = _transition(sim, grid)
    students = torch.arange(len(seq))
    posterior = torch.softmax(-0.5 * grid ** 2, dim=0).expand(len(seq), -1)  # (S, G), the N(0, 1) prior
    predictive = []
    for t in range(seq.items.shape[1]):
        step_likelihood = likelihood[seq.items[:, t]]  # (S, G, K)
        predictive.append(torch.einsum("sg,sgk->sk", posterior, step_likelihood))
        updated = posterior * step_likelihood[students, :, seq.responses[:, t]]
        updated = updated / updated.sum(dim=1, keepdim=True)
        if transition is not None:
            updated = updated @ transition
        posterior = torch.where(seq.padding_mask[:, t, None], posterior, updated)
    return torch.stack(predictive, dim=1).log().float()


def load_torch_file(path) -> object:
    """``torch.load(path, weights_only=True)``; a truncated or damaged file raises :class:`DataCorrupted`
    naming the file and the fix (delete it: it is re-extracted from the verified archive on the next run)."""
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DataCorrupted(f"{path}: cannot be read as a torch file, probably truncated or damaged ({exc}); delete "
                            f"it (rm -f '{path}') and it is re-extracted on the next run") from exc


def _load_tensor(member: str) -> Tensor:
    return load_torch_file(extract_member(_IRTORCH, f"{_DATASETS_DIR}/{member}"))


def _answer_key(member: str) -> Tensor:
    text = read_text_strict(extract_member(_IRTORCH, f"{_DATASETS_DIR}/{member}"))
    return torch.tensor([int(c) - 1 for c in text if c.isdigit()])  # options are numbered from 1 in the key


def _score_choices(choices: Tensor, key: Tensor) -> Tensor:
    """``(S, I)`` chosen options (NaN = no answer) → 1.0 correct, 0.0 incorrect, NaN kept."""
    if key.shape != choices.shape[1:]:
        raise ValueError(f"answer key has {key.numel()} entries for {choices.shape[1]} items")
    scored = (choices == key.to(choices.dtype)).to(choices.dtype)
    return scored.masked_fill(torch.isnan(choices), float("nan"))


def _math_exam_credits() -> Tensor:
    """``(729, 13)`` credits 0/1/2 (NaN = missing) of the 2014 university maths exam (psychotools)."""
    frame = read_rda(extract_member(_PSYCHOTOOLS, _MATH_EXAM))["MathExam14W"]
    credits = torch.tensor(frame["credits"], dtype=torch.float64)
    students = len(frame["tests"])  # one entry per student
    matrix = credits.view(-1, students).T  # R stores the (students, items) matrix column by column
    return matrix.masked_fill(matrix == NA_INTEGER, float("nan")).float()


def load_dataset(name: str) -> ResponseSequences:
    """One of :data:`DATASETS` as response sequences (fetched and cached on first use).

    ``math1``/``math2``, ``swesat_*``: the irtorch wheel; ``mathexam14w``: the psychotools
    Debian package. Raises :class:`tempattn.data.DataUnavailable` when it cannot be fetched.
    """
    if name in ("math1", "math2"):
        matrix = _load_tensor(f"national_mathematics/mathematics_{name[-1]}.pt")
        item_categories = tuple(int(m) + 1 for m in matrix.nan_to_num(0.0).amax(dim=0))
        return sequences_from_matrix(matrix, 5, item_categories)
    if name in ("swesat_quant", "swesat_verb"):
        part = name.split("_")[1]
        choices = _load_tensor(f"swedish_sat/swesat22b_{part}.pt")
        key = _answer_key(f"swedish_sat/swesat22b_{part}_correct.txt")
        return sequences_from_matrix(_score_choices(choices, key), 2)
    if name == "mathexam14w":
        return sequences_from_matrix(_math_exam_credits(), 3)
    raise ValueError(f"load_dataset: `name` must be one of {DATASETS}, got {name!r}; "
                     "hint: use simulate_gpcm for synthetic data")
