"""Raw pytest-benchmark JSON (with tempattn's ``extra_info``) -> long-format :class:`Row` list."""
import json
from typing import Dict, List

from .results import Row

MS_PER_S = 1e3
MIB = 2.0 ** 20


def load(path) -> Dict:
    with open(path) as f:
        return json.load(f)


def _context(raw: Dict) -> Dict:
    """Columns shared by every row of one run."""
    machine = raw.get("machine_info", {}).get("tempattn", {})
    return {"torch": machine.get("torch", ""), "tempattn_version": machine.get("tempattn_version", ""),
            "timestamp": raw.get("datetime", "")}


def _row(info: Dict, context: Dict, metric: str, values, unit: str, note: str = "") -> Row:
    p50, p20, p80 = values
    return Row(op=info["op"], provider=info["provider"], mode=info["mode"], metric=metric, dtype=info["dtype"],
               B=info["B"], H=info["H"], T=info["T"], D=info["D"], W=info.get("W"), S=info.get("S"),
               value_p50=p50, value_p20=p20, value_p80=p80, unit=unit, device=info["device"], note=note, **context)


def _measured_rows(info: Dict, context: Dict) -> List[Row]:
    times = (info["time_p50"], info["time_p20"], info["time_p80"])
    gflops = tuple(info["flops"] / t / 1e9 for t in (info["time_p50"], info["time_p80"], info["time_p20"]))
    memory = (info["peak_bytes"] / MIB,) * 3
    return [_row(info, context, "time", tuple(t * MS_PER_S for t in times), "ms"),
            _row(info, context, "memory", memory, "MiB"),
            _row(info, context, "gflops", gflops, "GFLOP/s")]


def rows_from_json(raw: Dict) -> List[Row]:
    """Three rows (time, memory, gflops) per measured case, one ``time`` row per unsupported case."""
    context = _context(raw)
    rows = [row for bench in raw.get("benchmarks", []) for row in _measured_rows(bench["extra_info"], context)]
    unsupported = raw.get("tempattn", {}).get("unsupported", [])
    rows += [_row(info, context, "time", (None, None, None), "ms", note=info["note"]) for info in unsupported]
    return rows
