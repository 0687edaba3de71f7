"""Raw pytest-benchmark JSON (with tempattn's ``extra_info``) -> long-format :class:`Row` list."""
import json
from typing import Dict, List

from .results import LATENCY, Row, partner_note

MS_PER_S = 1e3
US_PER_S = 1e6
MIB = 2.0 ** 20


def load(path) -> Dict:
    with open(path) as f:
        return json.load(f)


def _context(raw: Dict) -> Dict:
    """Columns shared by every row of one run."""
    machine = raw.get("machine_info", {}).get("tempattn", {})
    return {"torch": machine.get("torch", ""), "tempattn_version": machine.get("tempattn_version", ""),
            "timestamp": raw.get("datetime", "")}


def _row(info: Dict, context: Dict, metric: str, values, unit: str, note: str = "", provider=None) -> Row:
    p50, p20, p80 = values
    return Row(op=info["op"], provider=provider or info["provider"], mode=info["mode"], metric=metric,
               dtype=info["dtype"], B=info["B"], H=info["H"], T=info["T"], D=info["D"], W=info.get("W"),
               S=info.get("S"), value_p50=p50, value_p20=p20, value_p80=p80, unit=unit, device=info["device"],
               note=note, Tq=info.get("Tq"), **context)


def _is_latency(info: Dict) -> bool:
    """A per-call latency pair (tempattn.bench.latency): its extra_info's ``kind`` is the ``latency`` metric."""
    return info.get("kind") == LATENCY


def _latency_rows(info: Dict, context: Dict) -> List[Row]:
    """Two ``latency`` rows (microseconds per call): tempattn and its anchor, each naming the other."""
    provider, anchor, rounds = info["provider"], info["anchor"], info["rounds"]
    rows = []
    for side, prefix, partner in ((provider, "", anchor), (anchor, "anchor_", provider)):
        values = tuple(info[f"{prefix}time_p{p}"] * US_PER_S for p in (50, 20, 80))
        rows.append(_row(info, context, LATENCY, values, "us", partner_note(partner, rounds), provider=side))
    return rows


def _measured_rows(info: Dict, context: Dict) -> List[Row]:
    times = (info["time_p50"], info["time_p20"], info["time_p80"])
    gflops = tuple(info["flops"] / t / 1e9 for t in (info["time_p50"], info["time_p80"], info["time_p20"]))
    memory = (info["peak_bytes"] / MIB,) * 3
    return [_row(info, context, "time", tuple(t * MS_PER_S for t in times), "ms"),
            _row(info, context, "memory", memory, "MiB"),
            _row(info, context, "gflops", gflops, "GFLOP/s")]


def rows_from_json(raw: Dict) -> List[Row]:
    """Three rows (time, memory, gflops) per measured case, one ``time`` row per unsupported case;
    two ``latency`` rows per measured latency pair, one (tempattn's) per unsupported pair."""
    context = _context(raw)
    rows = []
    for bench in raw.get("benchmarks", []):
        info = bench["extra_info"]
        rows += _latency_rows(info, context) if _is_latency(info) else _measured_rows(info, context)
    for info in raw.get("tempattn", {}).get("unsupported", []):
        metric, unit = (LATENCY, "us") if _is_latency(info) else ("time", "ms")
        rows.append(_row(info, context, metric, (None, None, None), unit, note=info["note"]))
    return rows
