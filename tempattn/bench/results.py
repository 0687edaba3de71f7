"""The long-format results table (``results.csv``) and lookups over it.

One row per (op, provider, mode, metric, dtype, shape, device). ``metric`` is ``time``
(ms), ``memory`` (peak extra MiB) or ``gflops`` (GFLOP/s on admissible pairs; the
``matmul`` op holds the machine's ceiling). ``value_p20``/``value_p80`` are the 20th and
80th percentiles over the measured rounds (for gflops, the FLOPs over the p80 and p20
time). A case that could not be measured has one ``time`` row with empty values and the
reason in ``note``.
"""
import csv
import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple

from .cases import FLOOR, provider_order

COLUMNS = ("op", "provider", "mode", "metric", "dtype", "B", "H", "T", "D", "W", "S", "value_p50", "value_p20",
           "value_p80", "unit", "device", "torch", "tempattn_version", "timestamp", "note")
_INTS = ("B", "H", "T", "D", "W", "S")
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

    @property
    def variant(self) -> VariantKey:
        return (self.op, self.W, self.S)

    @property
    def measured(self) -> bool:
        return self.value_p50 is not None


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
        fields[name] = int(fields[name]) if fields[name] else None
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
    it from any variant resolve to those rows.
    """

    def __init__(self, rows: Iterable[Row]):
        self.rows = list(rows)
        self._index = {(r.device, r.variant, r.provider, r.mode, r.metric, r.T): r for r in self.rows}

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
        return sorted({r.variant for r in self.rows if r.device == device and r.op != "matmul"}, key=variant_order)

    def providers(self, device: str, variant: VariantKey) -> List[str]:
        """Providers with rows for this variant, the floor included wherever it was measured."""
        own = [r.provider for r in self.rows if r.device == device and r.variant == variant]
        floor = [r.provider for r in self.rows if r.device == device and r.provider == FLOOR]
        return sorted(set(own + floor), key=lambda p: (provider_order(p), p))

    def tempattn_providers(self, device: str, variant: VariantKey) -> List[str]:
        return [p for p in self.providers(device, variant) if p.startswith("tempattn_")]

    def Ts(self, device: str, variant: VariantKey) -> List[int]:
        return sorted({r.T for r in self.rows if r.device == device and r.variant == variant})

    def series(self, device, variant, provider, mode, metric) -> List[Tuple[int, float]]:
        """(T, p50) of every measured T, ascending."""
        points = [(T, self.value(device, variant, provider, mode, metric, T)) for T in self.Ts(device, variant)]
        return [(T, v) for T, v in points if v is not None]

    def ceiling_gflops(self, device: str) -> Optional[float]:
        rows = [r for r in self.rows if r.device == device and r.op == "matmul" and r.metric == "gflops"]
        return rows[0].value_p50 if rows and rows[0].measured else None

    def note(self, device, variant, provider, mode, T) -> str:
        row = self.get(device, variant, provider, mode, "time", T)
        return row.note if row is not None else f"no result at T={T}"
