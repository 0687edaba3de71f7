"""``REPORT.md``: machine and ceiling, target verdicts, per-call latency, per-op tables, ratios, growth fits, plots."""
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from . import plots
from .cases import ANCHORS, FLOOR, HEADLINE_T, MODES
from .growth import fit_exponent
from .latency import SCENARIO_TITLES
from .results import Results, Row, VariantKey, note_rounds, variant_label
from .targets import MET, MISSED, NOT_MEASURED, TARGETS, LatencyTarget, evaluate, fused_providers

METRICS = (("time", "median time, ms [p20–p80]"), ("gflops", "GFLOP/s on admissible pairs (median)"),
           ("memory", "peak extra memory, MiB"))


def _number(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _cell(row: Optional[Row], metric: str) -> str:
    if row is None:
        return "—"
    if not row.measured:
        return "unsupported"
    if metric == "time":
        return f"{_number(row.value_p50)} [{_number(row.value_p20)}–{_number(row.value_p80)}]"
    return _number(row.value_p50)


def _table(header: List[str], body: Iterable[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def metric_table(results: Results, device: str, variant: VariantKey, metric: str) -> List[str]:
    providers = results.providers(device, variant)
    body = ([str(T), mode] + [_cell(results.get(device, variant, p, mode, metric, T), metric) for p in providers]
            for T in results.Ts(device, variant) for mode in MODES)
    return _table(["T", "mode"] + providers, body)


def speedup_table(results: Results, device: str, variant: VariantKey) -> List[str]:
    """Rows (tempattn provider, T, mode); columns: anchor time / tempattn time."""
    anchors = [a for a in (*ANCHORS, FLOOR) if a in results.providers(device, variant)]
    body = []
    for provider in results.tempattn_providers(device, variant):
        for T in results.Ts(device, variant):
            for mode in MODES:
                fused = results.value(device, variant, provider, mode, "time", T)
                ratios = [results.value(device, variant, a, mode, "time", T) for a in anchors]
                body.append([provider, str(T), mode] + [f"{r / fused:.2f}×" if fused and r else "n/a" for r in ratios])
    return _table(["tempattn", "T", "mode"] + [f"vs {a}" for a in anchors], body)


def growth_table(results: Results, device: str, variant: VariantKey) -> List[str]:
    body = []
    for provider in results.providers(device, variant):
        for mode in MODES:
            fits = [fit_exponent(results.series(device, variant, provider, mode, m)) for m in ("time", "memory")]
            if any(fits):
                body.append([provider, mode] + [str(f) if f else "n/a" for f in fits])
    return _table(["provider", "mode", "time exponent (R²)", "memory exponent (R²)"], body)


def _variant_section(results: Results, device: str, variant: VariantKey, out_dir: Path) -> List[str]:
    lines = [f"### {variant_label(variant)} ({device})", ""]
    for metric, title in METRICS:
        lines += [f"**{title}**", ""] + metric_table(results, device, variant, metric) + [""]
    lines += ["**speed-up of tempattn over each anchor** (anchor time / tempattn time)", ""]
    lines += speedup_table(results, device, variant) + [""]
    lines += ["**growth exponents against T** (log-log least squares)", ""] + growth_table(results, device, variant)
    for metric in ("time", "memory"):
        path = plots.growth_plot(results, device, variant, metric, out_dir / "plots")
        lines += ["", f"![{metric} vs T, {variant_label(variant)}]({path.relative_to(out_dir).as_posix()})"]
    return lines + [""]


def _latency_cell(row: Optional[Row]) -> str:
    if row is None:
        return "—"
    if not row.measured:
        return "unsupported"
    return f"{row.value_p50:.1f} [{row.value_p20:.1f}–{row.value_p80:.1f}]"


def latency_section(results: Results) -> List[str]:
    """One table row per latency pair and fused backend: both medians, the ratio and the verdict."""
    if not results.latency_rows:
        return []
    targets = [t for t in TARGETS if isinstance(t, LatencyTarget)]
    body = []
    for device in results.devices():
        for provider in fused_providers(device):
            for target in targets:
                pair = target.pair
                fused, anchor = target.rows(results, device, provider)
                if fused is None and anchor is None:
                    continue
                status, _ = target.evaluate(results, device, provider)
                measured = status in (MET, MISSED)
                ratio = f"{fused.value_p50 / anchor.value_p50:.2f}×" if measured else "n/a"
                rounds = str(note_rounds(fused.note)) if measured else "—"
                body.append([device, SCENARIO_TITLES[pair.scenario], pair.shape.label(), pair.op_label(), pair.mode,
                             provider, _latency_cell(fused), pair.anchor, _latency_cell(anchor), rounds, ratio,
                             f"≤ {pair.max_ratio:g}×", f"**{status}**" if status != NOT_MEASURED else status])
    header = ["device", "scenario", "shape", "op", "mode", "tempattn", "µs per call [p20–p80]", "anchor",
              "µs per call [p20–p80]", "rounds", "ratio", "needs", "verdict"]
    intro = ("tempattn and its anchor timed alternately on the same inputs, one call each per round; medians over "
             "the rounds. Modes: `fwd` under `torch.no_grad()`; `fwd+grad` forward only with grad on (q, k, v and "
             "the parameters require grad); `fwd+bwd` forward + `torch.autograd.grad`. Anchors: `sdpa` plain SDPA, "
             "`sdpa_causal` SDPA is_causal=True, `sdpa_dense` SDPA with the op's mask or bias as a dense tensor.")
    return ["## Per-call latency (host overhead)", "", intro, ""] + _table(header, body) + [""]


def _machine_section(results: Results, machine: Dict) -> List[str]:
    backends = machine.get("backends", {})
    status = "; ".join(f"{name}: {'available' if b['available'] else 'unavailable (' + str(b['reason']) + ')'}"
                       for name, b in backends.items())
    lines = ["## Machine", "",
             f"- CPU: {machine.get('cpu_model', 'unknown')}, {machine.get('logical_cores', '?')} logical cores, "
             f"{machine.get('torch_threads', '?')} torch threads",
             f"- GPU: {machine.get('gpu') or 'none'}",
             f"- torch {machine.get('torch', '?')}, tempattn {machine.get('tempattn_version', '?')}",
             f"- tempattn backends: {status or 'unknown'}"]
    for device in results.devices():
        ceiling = results.ceiling_gflops(device)
        figure = f"{ceiling:.1f} GFLOP/s" if ceiling else "not measured"
        lines.append(f"- matmul ceiling ({device}, fp32 N×N): {figure}")
    return lines + [""]


def _unsupported_section(results: Results) -> List[str]:
    groups: Dict[tuple, List[int]] = {}
    for row in results.rows:
        if not row.measured:
            key = (row.device, variant_label(row.variant), row.provider, row.mode, row.note)
            groups.setdefault(key, []).append(row.T)
    body = ([d, v, p, m, ", ".join(str(T) for T in sorted(Ts)), note] for (d, v, p, m, note), Ts in groups.items())
    return ["## Unsupported cases", ""] + _table(["device", "op", "provider", "mode", "T", "reason"], body) + [""]


def render(results: Results, machine: Dict, profile: str, out_dir: Path) -> str:
    """The report's Markdown; writes the plots under ``out_dir/plots``."""
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    timestamp = results.rows[0].timestamp if results.rows else "?"
    lines = ["# tempattn benchmark report", "",
             f"Profile `{profile}`, run {timestamp}. Headline shape: fp32, B=2, H=4, D=64, T={HEADLINE_T}. "
             "How to read this report: [benchmarks/README.md](../README.md).", ""]
    lines += _machine_section(results, machine)
    lines += ["## Targets", ""] + [v.line() for v in evaluate(results)] + [""]
    lines += latency_section(results)
    for device in results.devices():
        if not results.variants(device):  # a run of the latency pairs only
            continue
        path = plots.speedup_chart(results, device, out_dir / "plots")
        chart = path.relative_to(out_dir).as_posix()
        lines += [f"## Results on {device}", "", f"![speed-ups at T={HEADLINE_T}]({chart})", ""]
        for variant in results.variants(device):
            lines += _variant_section(results, device, variant, out_dir)
    lines += _unsupported_section(results)
    return "\n".join(lines)


def write_report(results: Results, machine: Dict, profile: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "REPORT.md"
    path.write_text(render(results, machine, profile, out_dir))
    return path
