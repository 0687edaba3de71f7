"""Event sequences for the fraud classifier: a synthetic source with a known optimum, and CDNOW.

Every sample is one *target event* (the event to classify) with its history: the last
``max_len`` events of the account that end at the target, oldest first, right-padded
(:class:`EventSequences`). Nothing after the target enters the window (:func:`pad_histories`
only ever sees ``events[: target + 1]``), so a sample cannot leak the future.

Synthetic (:func:`make_synthetic`): every account has a normal history and then one final
segment drawn from a scenario; the clean fraud indicator ``Z`` is the scenario, and the
scenarios are built so that ``Z`` is a deterministic function of the observed window (see
:data:`SCENARIOS`). The observed label is ``Y = Z xor noise`` with noise rate ``label_noise``,
so ``P(Y=1 | x)`` takes only the values ``label_noise`` and ``1 - label_noise`` and the
Bayes-optimal ROC-AUC is :func:`bayes_optimal_auc` of the fraud rate and the noise rate.

CDNOW (:func:`load_cdnow`): the real purchase histories of 23,570 CDNOW customers
(``lifetimes==0.11.3`` wheel, sha256-pinned). The data has NO fraud labels: for a seeded
random ``anomaly_rate`` of the customers the last transaction is replaced by an anomalous one
(:func:`inject_anomalies`; the labels are *injected*, the dataset is semi-synthetic).
"""
import dataclasses
import datetime
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ...data import Package, extract_member, read_text_strict
from ...nn import _heads

__all__ = ["EventSequences", "FeatureSpec", "FraudDataset", "Scenario", "SCENARIOS", "SyntheticConfig",
           "make_synthetic", "bayes_optimal_auc", "pad_histories", "split_by_group", "Transactions", "parse_cdnow",
           "inject_anomalies", "load_cdnow", "DATASETS", "INJECTED_LABELS_NOTE"]

DATASETS = ("cdnow", "synthetic")
CDNOW_PACKAGE = Package("lifetimes", "0.11.3", "wheel",
                        "261e3dc89977c2b60767ca6728aaa29d429de0c814635070a749c36555895da8")
CDNOW_MEMBER = "lifetimes/datasets/CDNOW_master.txt"
INJECTED_LABELS_NOTE = ("CDNOW has no fraud labels: the labels are INJECTED anomalies (semi-synthetic), "
                        "see tempattn.models.tsa.data.inject_anomalies")


_fail = functools.partial(_heads.fail, "tsa")  # (name, expected, got, hint, exc=ValueError)


# ---- containers -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EventSequences:
    """A batch of right-padded event sequences, oldest event first (``N`` rows, ``T`` steps).

    categorical: ``(N, T, C)`` int64 category ids per event and field.
    numeric: ``(N, T, F)`` float numeric features per event.
    times: ``(N, T)`` float event times in days, non-decreasing over the real events of a row.
    padding_mask: ``(N, T)`` bool, **True = padding** (the ``key_padding_mask`` convention).
    """
    categorical: Tensor
    numeric: Tensor
    times: Tensor
    padding_mask: Tensor

    def __post_init__(self):
        for name, dims in (("categorical", 3), ("numeric", 3), ("times", 2), ("padding_mask", 2)):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dim() != dims:
                _fail(f"EventSequences.{name}", f"a {dims}-D tensor", _heads.describe(value), "see the class docstring")
        checks = (("categorical", self.categorical.dtype == torch.int64, "int64", "`.long()`"),
                  ("numeric", self.numeric.is_floating_point(), "floating point", "`.float()`"),
                  ("times", self.times.is_floating_point(), "floating point", "`.double()` for exact days"),
                  ("padding_mask", self.padding_mask.dtype == torch.bool, "bool (True = padding)",
                   "`lengths[:, None] <= torch.arange(T)`"))
        for name, ok, expected, hint in checks:
            if not ok:
                _fail(f"EventSequences.{name}", f"of dtype {expected}", getattr(self, name).dtype, hint, TypeError)
        shape = tuple(self.padding_mask.shape)
        for name in ("categorical", "numeric", "times"):
            if tuple(getattr(self, name).shape[:2]) != shape:
                _fail(f"EventSequences.{name}", f"of leading shape (N, T) = {shape} like padding_mask",
                      tuple(getattr(self, name).shape), "all fields describe the same events")

    def __len__(self) -> int:
        return self.padding_mask.shape[0]

    def __getitem__(self, rows) -> "EventSequences":
        return EventSequences(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def to(self, device) -> "EventSequences":
        return EventSequences(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Names of the event features; ``amount_feature`` indexes the (log) amount in ``numeric``."""
    categorical: Tuple[str, ...]
    cardinalities: Tuple[int, ...]
    numeric: Tuple[str, ...]
    amount_feature: int = 0

    def model_kwargs(self) -> Dict[str, object]:
        """The arguments of ``build_tsa`` / ``build_tsa_gated`` that describe these features."""
        return {"cardinalities": self.cardinalities, "n_numeric": len(self.numeric),
                "amount_feature": self.amount_feature}


@dataclasses.dataclass(frozen=True)
class FraudDataset:
    """One target event per row.

    events: the windows ending at each target; labels: ``(N,)`` float 0/1; groups: ``(N,)``
    int64 account / customer id (the split unit); peer: the second sequence of ``tsa_gated``
    (events strictly at or before each target's time), or None; clean_labels: the noise-free
    fraud indicator where known (synthetic), else None; kinds: the scenario / injection kind per
    row; note: what the labels are.
    """
    name: str
    spec: FeatureSpec
    events: EventSequences
    labels: Tensor
    groups: Tensor
    kinds: Tuple[str, ...]
    note: str
    peer: Optional[EventSequences] = None
    clean_labels: Optional[Tensor] = None
    label_noise: Optional[float] = None
    fraud_rate: Optional[float] = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: Tensor) -> "FraudDataset":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return dataclasses.replace(
            self, events=self.events[rows], labels=self.labels[rows], groups=self.groups[rows],
            kinds=tuple(self.kinds[i] for i in rows.tolist()),
            peer=None if self.peer is None else self.peer[rows],
            clean_labels=None if self.clean_labels is None else self.clean_labels[rows])


# ---- windows and splits -------------------------------------------------------------------------

EventHistory = Tuple[np.ndarray, np.ndarray, np.ndarray]
"""One account's events up to and including the target: categorical (n, C), numeric (n, F), times (n,)."""


def pad_histories(histories: Sequence[EventHistory], max_len: int) -> EventSequences:
    """The last ``max_len`` events of each history, right-padded into one :class:`EventSequences`.

    Each history must end at its target event; nothing else is read, so events after the
    target cannot enter the window. Padded entries are zero (the model never reads them).
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        _fail("max_len", "a positive int", repr(max_len), "the window length in events, e.g. 16")
    n, n_cat, n_num = len(histories), histories[0][0].shape[1], histories[0][1].shape[1]
    categorical = np.zeros((n, max_len, n_cat), dtype=np.int64)
    numeric = np.zeros((n, max_len, n_num), dtype=np.float32)
    times = np.zeros((n, max_len), dtype=np.float64)
    padding = np.ones((n, max_len), dtype=bool)
    for row, (cat, num, t) in enumerate(histories):
        first = max(0, len(t) - max_len)
        keep = len(t) - first
        categorical[row, :keep], numeric[row, :keep] = cat[first:], num[first:]
        times[row, :keep], padding[row, :keep] = t[first:], False
    return EventSequences(torch.from_numpy(categorical), torch.from_numpy(numeric), torch.from_numpy(times),
                          torch.from_numpy(padding))


def split_by_group(groups: Tensor, fractions: Tuple[float, float, float] = (0.7, 0.15, 0.15),
                   seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """Row indices (train, val, test) with every group (account / customer) in exactly one part."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        _fail("fractions", "three positive fractions summing to 1", fractions, "e.g. (0.7, 0.15, 0.15)")
    unique = torch.unique(groups)
    order = unique[torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))]
    cuts = np.round(np.cumsum(fractions[:2]) * len(unique)).astype(int)
    parts = (order[:cuts[0]], order[cuts[0]:cuts[1]], order[cuts[1]:])
    return tuple(torch.nonzero(torch.isin(groups, part)).flatten() for part in parts)


def _gaps(times: np.ndarray) -> np.ndarray:
    """Days since the previous event of the same history (0 for its first event)."""
    return np.diff(times, prepend=times[:1])


# ---- synthetic ground truth ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scenario:
    """The final segment appended to a normal history, and its clean fraud indicator ``fraud``.

    ``first_gap``: range of the gap before the segment (days); ``burst``: 2-3 events 0.01-0.1
    days apart instead of one; ``high``: amounts ``mu + [3, 5] sd`` instead of normal ones;
    ``peer_burst``: the peer sequence ends with 3-4 events in its last 0.2 days, of high
    (True) or normal (False) amounts, or has no burst (None).
    """
    fraud: int
    first_gap: Tuple[float, float] = (0.5, 5.0)
    burst: bool = False
    high: bool = False
    peer_burst: Optional[bool] = None


QUIET_GAP = (15.0, 30.0)
SCENARIOS: Dict[str, Scenario] = {
    "normal": Scenario(0),
    "fraud": Scenario(1, QUIET_GAP, burst=True, high=True),
    "spree": Scenario(0, QUIET_GAP, burst=True),
    "big_purchase": Scenario(0, high=True),
    "bulk_burst": Scenario(0, burst=True, high=True),
    "merchant_compromise": Scenario(1, peer_burst=True),
    "peer_busy": Scenario(0, peer_burst=False),
}
"""Normal gaps lie in [0.5, 5] days, burst gaps in [0.01, 0.1], quiet gaps in [15, 30]; normal
amounts (log scale) in ``mu +- 1.5 sd``, high ones in ``mu + [3, 5] sd``. Every history has at
least ``min_history`` normal events, so the ranges never overlap and the scenario (hence Z)
is identifiable from the window: fraud = a high-amount burst after a quiet gap, or a
high-amount burst at the merchant (peer sequence)."""


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic source. ``with_peer`` adds the peer sequence and the peer scenarios.

    The scenario probabilities are ``single_probs`` (``with_peer=False``) or ``peer_probs``.
    """
    n_accounts: int = 3000
    min_history: int = 6
    max_history: int = 12
    max_len: int = 16
    label_noise: float = 0.05
    with_peer: bool = False
    n_categories: int = 8
    n_channels: int = 3
    amount_sd: float = 0.25
    single_probs: Tuple[Tuple[str, float], ...] = (
        ("normal", 0.3), ("fraud", 0.3), ("spree", 0.15), ("big_purchase", 0.125), ("bulk_burst", 0.125))
    peer_probs: Tuple[Tuple[str, float], ...] = (
        ("normal", 0.2), ("fraud", 0.2), ("spree", 0.1), ("big_purchase", 0.1), ("bulk_burst", 0.1),
        ("merchant_compromise", 0.15), ("peer_busy", 0.15))

    def __post_init__(self):
        if not 0.0 <= self.label_noise < 0.5:
            _fail("label_noise", "in [0, 0.5)", self.label_noise, "the probability that a label is flipped")
        if not 1 <= self.min_history <= self.max_history:
            _fail("min_history", f"in [1, max_history={self.max_history}]", self.min_history,
                  "the number of normal events before the final segment")
        if self.max_len < self.max_history + 3:
            _fail("max_len", f">= max_history + 3 = {self.max_history + 3}", self.max_len,
                  "the window must hold the history and the longest final segment")

    @property
    def scenario_probs(self) -> Tuple[Tuple[str, float], ...]:
        return self.peer_probs if self.with_peer else self.single_probs

    @property
    def fraud_rate(self) -> float:
        return sum(p for name, p in self.scenario_probs if SCENARIOS[name].fraud)


def bayes_optimal_auc(fraud_rate: float, label_noise: float) -> float:
    """Expected ROC-AUC of the best scorer when the clean indicator Z is identifiable and Y = Z xor noise.

    The best scorer ranks by ``P(Y=1|x)``, which is ``1-rho`` for Z=1 and ``rho`` for Z=0. With
    ``pi = P(Z=1)``: positives are Z=1 w.p. ``a = pi(1-rho)`` or Z=0 w.p. ``b = (1-pi)rho``,
    negatives Z=1 w.p. ``c = pi rho`` or Z=0 w.p. ``e = (1-pi)(1-rho)``, and
    ``AUC = (a e + (a c + b e) / 2) / ((a + b)(c + e))`` (ties count one half).
    """
    pi, rho = fraud_rate, label_noise
    a, b, c, e = pi * (1 - rho), (1 - pi) * rho, pi * rho, (1 - pi) * (1 - rho)
    return (a * e + 0.5 * (a * c + b * e)) / ((a + b) * (c + e))


def _amounts(rng: np.random.Generator, level: float, sd: float, n: int, high: bool) -> np.ndarray:
    """``n`` log amounts, normal (``level +- 1.5 sd``) or high (``level + [3, 5] sd``)."""
    return level + sd * (rng.uniform(3.0, 5.0, n) if high else rng.uniform(-1.5, 1.5, n))


def _segment(scenario: Scenario, rng: np.random.Generator, mu: float, sd: float) -> Tuple[np.ndarray, np.ndarray]:
    """(gaps, log amounts) of the final segment of an own sequence."""
    n = int(rng.integers(2, 4)) if scenario.burst else 1
    gaps = np.concatenate([[rng.uniform(*scenario.first_gap)], rng.uniform(0.01, 0.1, n - 1)])
    return gaps, _amounts(rng, mu, sd, n, scenario.high)


def _peer_events(scenario: Scenario, rng: np.random.Generator, target_time: float,
                 sd: float) -> Tuple[np.ndarray, np.ndarray]:
    """(times, log amounts) of the merchant's recent events, oldest first, all before ``target_time``."""
    level = rng.normal(3.5, 0.5)
    n_old = int(rng.integers(4, 9))
    ages, amounts = rng.uniform(0.3, 10.0, n_old), _amounts(rng, level, sd, n_old, high=False)
    if scenario.peer_burst is not None:
        n_burst = int(rng.integers(3, 5))
        ages = np.concatenate([ages, rng.uniform(0.001, 0.2, n_burst)])
        amounts = np.concatenate([amounts, _amounts(rng, level, sd, n_burst, scenario.peer_burst)])
    order = np.argsort(-ages, kind="stable")
    return target_time - ages[order], amounts[order]


def _as_history(times: np.ndarray, amounts: np.ndarray, rng: np.random.Generator,
                config: SyntheticConfig) -> EventHistory:
    categorical = np.stack([rng.integers(0, config.n_categories, len(times)),
                            rng.integers(0, config.n_channels, len(times))], axis=1)
    numeric = np.stack([amounts, np.log1p(_gaps(times))], axis=1)
    return categorical, numeric, times


def _synthetic_account(rng: np.random.Generator, config: SyntheticConfig, scenario: Scenario):
    mu, sd = rng.normal(3.5, 0.8), config.amount_sd
    n_history = int(rng.integers(config.min_history, config.max_history + 1))
    gaps, amounts = _segment(scenario, rng, mu, sd)
    gaps = np.concatenate([rng.uniform(0.5, 5, n_history), gaps])
    amounts = np.concatenate([_amounts(rng, mu, sd, n_history, high=False), amounts])
    times = np.cumsum(gaps) - gaps[0]
    own = _as_history(times, amounts, rng, config)
    peer = _as_history(*_peer_events(scenario, rng, times[-1], sd), rng, config) if config.with_peer else None
    return own, peer


def make_synthetic(config: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> FraudDataset:
    """Seeded synthetic accounts (one target = the last event per account) with known ground truth."""
    rng = np.random.default_rng(seed)
    names, probs = zip(*config.scenario_probs)
    scenarios = rng.choice(len(names), size=config.n_accounts, p=np.asarray(probs) / sum(probs))
    accounts = [_synthetic_account(rng, config, SCENARIOS[names[s]]) for s in scenarios]
    clean = torch.tensor([SCENARIOS[names[s]].fraud for s in scenarios], dtype=torch.float32)
    flips = torch.from_numpy(rng.random(config.n_accounts) < config.label_noise)
    peer = pad_histories([p for _, p in accounts], config.max_len) if config.with_peer else None
    return FraudDataset(
        name="synthetic", spec=FeatureSpec(("merchant_category", "channel"), (config.n_categories, config.n_channels),
                                           ("log_amount", "log1p_gap_days")),
        events=pad_histories([own for own, _ in accounts], config.max_len),
        labels=torch.where(flips, 1 - clean, clean), groups=torch.arange(config.n_accounts),
        kinds=tuple(names[s] for s in scenarios), note="synthetic: labels = scenario xor label noise",
        peer=peer, clean_labels=clean, label_noise=config.label_noise, fraud_rate=config.fraud_rate)


# ---- CDNOW (real histories, injected labels) ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Transactions:
    """A transaction table sorted by (customer, day, file order): ``(n,)`` arrays each."""
    customer: np.ndarray  # int64 customer id
    day: np.ndarray       # float64 days since 1997-01-01
    quantity: np.ndarray  # float64 number of CDs
    amount: np.ndarray    # float64 dollars

    def take(self, rows: np.ndarray) -> "Transactions":
        return Transactions(self.customer[rows], self.day[rows], self.quantity[rows], self.amount[rows])

    def gaps(self) -> np.ndarray:
        """Days since the same customer's previous transaction (0 for its first)."""
        same_customer = np.append(False, self.customer[1:] == self.customer[:-1])
        return np.where(same_customer, _gaps(self.day), 0.0)

    def last_rows(self) -> np.ndarray:
        """Index of each customer's last transaction (its target), in customer order."""
        return np.flatnonzero(np.append(self.customer[1:] != self.customer[:-1], True))


def parse_cdnow(text: str) -> Transactions:
    """Parse ``CDNOW_master.txt``: a header, then ``customer_id date(YYYYMMDD) number_of_cds dollar_value``."""
    rows = [line.split() for line in text.splitlines()[1:] if line.strip()]
    bad = [r for r in rows if len(r) != 4]
    if bad:
        _fail("CDNOW text", "rows of 4 fields (customer, date, cds, dollars)", bad[0], "is this CDNOW_master.txt?")
    origin = datetime.date(1997, 1, 1)
    days = [(datetime.date(int(d[:4]), int(d[4:6]), int(d[6:])) - origin).days for _, d, _, _ in rows]
    table = Transactions(np.array([int(r[0]) for r in rows], dtype=np.int64), np.array(days, dtype=np.float64),
                         np.array([float(r[2]) for r in rows]), np.array([float(r[3]) for r in rows]))
    return table.take(np.lexsort((np.arange(len(rows)), table.day, table.customer)))


def inject_anomalies(table: Transactions, rate: float = 0.05, seed: int = 0
                     ) -> Tuple[Transactions, np.ndarray, List[str]]:
    """Replace the last transaction of a seeded random ``rate`` of the customers by an anomalous one.

    Exactly ``round(rate * customers)`` customers are drawn; each gets, with equal probability:

    - ``price_spike``: the amount times U(3, 8), the number of CDs unchanged;
    - ``volume_burst``: the number of CDs times an integer in [3, 6] and the amount by the same
      factor times U(0.9, 1.1); the transaction moves to the day of the customer's previous
      transaction (a same-day burst) when there is one.

    Only target transactions change and every customer keeps its number of transactions, so
    the classes differ in the injected pattern only. Returns the new table, the 0/1 label per
    customer (in customer order, like ``table.last_rows()``) and the kind per customer
    (``"real"`` when not injected).
    """
    if not 0.0 < rate < 1.0:
        _fail("rate", "in (0, 1)", rate, "the fraction of customers that get an injected anomaly, e.g. 0.05")
    rng = np.random.default_rng(seed)
    last = table.last_rows()
    chosen = rng.permutation(len(last))[:int(round(rate * len(last)))]
    day, quantity, amount = table.day.copy(), table.quantity.copy(), table.amount.copy()
    kinds = ["real"] * len(last)
    for customer in np.sort(chosen):
        row = last[customer]
        has_previous = row > 0 and table.customer[row - 1] == table.customer[row]
        if rng.random() < 0.5:
            kinds[customer] = "price_spike"
            amount[row] *= rng.uniform(3.0, 8.0)
            continue
        kinds[customer] = "volume_burst"
        factor = int(rng.integers(3, 7))
        quantity[row] *= factor
        amount[row] *= factor * rng.uniform(0.9, 1.1)
        if has_previous:
            day[row] = day[row - 1]
    labels = np.zeros(len(last), dtype=np.float32)
    labels[chosen] = 1.0
    return Transactions(table.customer, day, quantity, amount), labels, kinds


CDNOW_SPEC = FeatureSpec(("day_of_week",), (7,),
                         ("log1p_amount", "log1p_cds", "log1p_price_per_cd", "log1p_gap_days"), amount_feature=0)


def _cdnow_features(table: Transactions, gaps: np.ndarray, rows: np.ndarray) -> EventHistory:
    """Features of the transactions ``rows`` (time-ordered); ``gaps`` is ``table.gaps()``."""
    day, quantity, amount = table.day[rows], table.quantity[rows], table.amount[rows]
    # 1997-01-01 was a Wednesday (Monday = 0).
    categorical = ((day.astype(np.int64) + 2) % 7)[:, None]
    numeric = np.stack([np.log1p(amount), np.log1p(quantity), np.log1p(amount / np.maximum(quantity, 1)),
                        np.log1p(gaps[rows])], axis=1)
    return categorical, numeric, day


def _market_histories(table: Transactions, gaps: np.ndarray, targets: np.ndarray,
                      n_peer: int) -> List[EventHistory]:
    """For each target: the ``n_peer`` latest non-target transactions (any customer) on earlier days."""
    pool = np.setdiff1d(np.arange(len(table.day)), targets)
    pool = pool[np.argsort(table.day[pool], kind="stable")]
    ends = np.searchsorted(table.day[pool], table.day[targets], side="left")
    return [_cdnow_features(table, gaps, pool[max(0, end - n_peer):end]) for end in ends]


def load_cdnow(max_len: int = 16, anomaly_rate: float = 0.05, seed: int = 0, with_peer: bool = False,
               n_peer: int = 16) -> FraudDataset:
    """CDNOW with injected anomalies: one row per customer, target = the customer's last transaction.

    Features per event: day of week (categorical); log1p of amount, of the number of CDs, of the
    price per CD and of the days since the customer's previous transaction (numeric); times in
    days since 1997-01-01. ``with_peer`` adds the "market context" sequence for ``tsa_gated``:
    the ``n_peer`` latest non-target transactions of all customers on days before the target's
    day (real events only, none of them injected, none later than the target).
    Fetches the pinned wheel once (``DataUnavailable`` when offline).
    """
    text = read_text_strict(extract_member(CDNOW_PACKAGE, CDNOW_MEMBER), encoding="ascii")
    table, labels, kinds = inject_anomalies(parse_cdnow(text), anomaly_rate, seed)
    targets, gaps = table.last_rows(), table.gaps()
    starts = np.concatenate([[0], targets[:-1] + 1])
    histories = [_cdnow_features(table, gaps, np.arange(max(s, t + 1 - max_len), t + 1))
                 for s, t in zip(starts, targets)]
    peer = pad_histories(_market_histories(table, gaps, targets, n_peer), n_peer) if with_peer else None
    return FraudDataset(name="cdnow", spec=CDNOW_SPEC, events=pad_histories(histories, max_len),
                        labels=torch.from_numpy(labels), groups=torch.from_numpy(table.customer[targets]),
                        kinds=tuple(kinds), note=INJECTED_LABELS_NOTE, peer=peer,
                        fraud_rate=float(labels.mean()))
