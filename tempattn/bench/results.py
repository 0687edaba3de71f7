"""The long-format results table (``results.csv``) and lookups over it.

One row per (op, provider, mode, metric, dtype, shape, device). ``metric`` is ``time``
(ms), ``memory`` (peak extra MiB) or ``gflops`` (GFLOP/s on admissible pairs; the
``matmul`` op holds the machine's ceiling). ``value_p20``/``value_p80`` are the 20th and
80th percentiles over the measured rounds (for gflops, the FLOPs over the p80 and p20
time). A case that could not be measured has one ``time`` row with empty values and the
reason in ``note``.

The per-call latency pairs (:mod:`tempattn.bench.latency`) have metric ``latency``
(microseconds per call), ``Tq`` queries against ``T`` keys, and a ``note`` naming the
provider the row was timed alternately with and the number of rounds; an unsupported pair
has one ``latency`` row with the reason. ``Tq`` is empty in the other rows (queries = ``T``).
"""
import csv
import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple

from .cases import FLOOR, provider_order

COLUMNS = ("op", "provider", "mode", "metric", "dtype", "B", "H", "T", "Tq", "D", "W", "S", "value_p50",
           "value_p20", "value_p80", "unit", "device", "torch", "tempattn_version", "timestamp", "note")
_INTS = ("B", "H", "T", "Tq", "D", "W", "S")
LATENCY = "latency"  # the metric of the per-call latency rows, kept apart from the T-grid tables
_FLOATS = ("value_p50", "value_p20", "value_p80")

VariantKey = Tuple[str, Optional[int], Optional[int]]  # (op, W, S)
FLOOR_VARIANT: VariantKey = ("masked_sdpa", None, None)
OP_ORDER = ("masked_sdpa", "relpos_attention", "decay_attention")


def variant_order(variant: VariantKey):
    op, W, S = variant
    return (OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER), op, W or -1, S or -1)


@dataclasses.dataclass(frozen=True)
class Row:
    op: str
    provider: str
    mode: str
    metric: str
    dtype: str
    B: int
    H: int
    T: int
    D: int
    W: Optional[int]
    S: Optional[int]
    value_p50: Optional[float]
    value_p20: Optional[float]
    value_p80: Optional[float]
    unit: str
    device: str
    torch: str
    tempattn_version: str
    timestamp: str
    note: str = ""
    Tq: Optional[int] = None  # queries of a latency row; None in the T-grid rows (queries = keys = T)

    @property
    def variant(self) -> VariantKey:
        return (self.op, self.W, self.S)

    @property
    def measured(self) -> bool:
        return self.value_p50 is not None

    @property
    def latency_key(self) -> Tuple:
        """(op, mode, B, H, Tq, T, D, W, S): the pair a latency row belongs to (see tempattn.bench.latency)."""
        return (self.op, self.mode, self.B, self.H, self.Tq, self.T, self.D, self.W, self.S)


def _cell(value) -> str:
    return "" if value is None else str(value)


def write_csv(rows: Iterable[Row], path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_cell(getattr(row, c)) for c in COLUMNS])


def _parse(record: Dict[str, str]) -> Row:
    fields = dict(record)
    for name in _INTS:
        fields[name] = int(fields[name]) if fields.get(name) else None  # files written before Tq lack it
    for name in _FLOATS:
        fields[name] = float(fields[name]) if fields[name] else None
    return Row(**fields)


def read_csv(path) -> List[Row]:
    with open(path, newline="") as f:
        return [_parse(record) for record in csv.DictReader(f)]


def variant_label(variant: VariantKey) -> str:
    op, W, S = variant
    parts = [op] + [f"{name}={value}" for name, value in (("W", W), ("S", S)) if value is not None]
    return " ".join(parts)


class Results:
    """Index over rows: ``get(device, variant, provider, mode, metric, T)``.

    The floor provider (plain causal SDPA) is measured once, under masked_sdpa; lookups of
    it from any variant resolve to those rows. The per-call latency rows (metric ``latency``)
    stay out of the T-grid index, tables and plots; :meth:`latency` finds them.
    """

    def __init__(self, rows: Iterable[Row]):
        self.rows = list(rows)
        self.grid_rows = [r for r in self.rows if r.metric != LATENCY]
        self.latency_rows = [r for r in self.rows if r.metric == LATENCY]
        self._index = {(r.device, r.variant, r.provider, r.mode, r.metric, r.T): r for r in self.grid_rows}

    def get(self, device: str, variant: VariantKey, provider: str, mode: str, metric: str, T: int) -> Optional[Row]:
        if provider == FLOOR:
            variant = FLOOR_VARIANT
        return self._index.get((device, variant, provider, mode, metric, T))

    def value(self, device, variant, provider, mode, metric, T) -> Optional[float]:
        row = self.get(device, variant, provider, mode, metric, T)
        return row.value_p50 if row is not None else None

    def devices(self) -> List[str]:
        return sorted({r.device for r in self.rows})

    def variants(self, device: str) -> List[VariantKey]:
        return sorted({r.variant for r in self.grid_rows if r.device == device and r.op != "matmul"},
                      key=variant_order)

    def providers(self, device: str, variant: VariantKey) -> List[str]:
        """Providers with rows for this variant, the floor included wherever it was measured."""
        own = [r.provider for r in self.grid_rows if r.device == device and r.variant == variant]
        floor = [r.provider for r in self.grid_rows if r.device == device and r.provider == FLOOR]
        return sorted(set(own + floor), key=lambda p: (provider_order(p), p))

    def tempattn_providers(self, device: str, variant: VariantKey) -> List[str]:
        return [p for p in self.providers(device, variant) if p.startswith("tempattn_")]

    def Ts(self, device: str, variant: VariantKey) -> List[int]:
        return sorted({r.T for r in self.grid_rows if r.device == device and r.variant == variant})

    def series(self, device, variant, provider, mode, metric) -> List[Tuple[int, float]]:
        """(T, p50) of every measured T, ascending."""
        points = [(T, self.value(device, variant, provider, mode, metric, T)) for T in self.Ts(device, variant)]
        return [(T, v) for T, v in points if v is not None]

    def ceiling_gflops(self, device: str) -> Optional[float]:
        rows = [r for r in self.grid_rows if r.device == device and r.op == "matmul" and r.metric == "gflops"]
        return rows[0].value_p50 if rows and rows[0].measured else None

    def note(self, device, variant, provider, mode, T) -> str:
        row = self.get(device, variant, provider, mode, "time", T)
        return row.note if row is not None else f"no result at T={T}"

    def latency(self, device: str, key: Tuple, provider: str, partner: Optional[str] = None) -> Optional[Row]:
        """The latency row of ``provider`` for the pair ``key`` on ``device``; with ``partner``, only the row
        timed alternately with that provider (an anchor is measured once per tempattn backend)."""
        for row in self.latency_rows:
            if row.device == device and row.provider == provider and row.latency_key == tuple(key) and \
                    (partner is None or note_partner(row.note) == partner):
                return row
        return None


_PARTNER = "alternated with "


def partner_note(partner: str, rounds: int) -> str:
    """The ``note`` of a measured latency row: the provider it was timed alternately with, and the rounds."""
    return f"{_PARTNER}{partner}, {rounds} rounds"


def note_partner(note: str) -> Optional[str]:
    """The partner named by :func:`partner_note`, or None."""
    return note[len(_PARTNER):].split(", ", 1)[0] if note.startswith(_PARTNER) else None


def note_rounds(note: str) -> Optional[int]:
    """The number of rounds written by :func:`partner_note`, or None."""
    if not note.startswith(_PARTNER) or not note.endswith(" rounds"):
        return None
    return int(note[:-len(" rounds")].rsplit(", ", 1)[1])
