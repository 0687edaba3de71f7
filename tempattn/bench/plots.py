"""PNG plots of a run (matplotlib, Agg): growth against T (log-log) and speed-ups at the headline shape."""
from pathlib import Path
from typing import List

try:
    import matplotlib
except ImportError as exc:  # an optional dependency: the [bench] extra
    raise ImportError("tempattn.bench's report plots need matplotlib: pip install 'tempattn[bench]'") from exc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)

from .cases import ANCHORS, FLOOR, HEADLINE_T, MODES, provider_order  # noqa: E402
from .growth import fit_exponent  # noqa: E402
from .results import Results, VariantKey, variant_label  # noqa: E402

METRIC_AXIS = {"time": "median time (ms)", "memory": "peak extra memory (MiB)"}


def _colour(provider: str):
    """The same colour for a provider in every panel and plot."""
    return plt.get_cmap("tab10")(provider_order(provider) % 10)


def _slug(*parts) -> str:
    text = "_".join(str(p) for p in parts if p is not None)
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def growth_plot(results: Results, device: str, variant: VariantKey, metric: str, out_dir: Path) -> Path:
    """One panel per mode: ``metric`` against T, log-log, a line per provider labelled with its fitted slope."""
    fig, axes = plt.subplots(1, len(MODES), figsize=(6 * len(MODES), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], MODES):
        for provider in results.providers(device, variant):
            points = results.series(device, variant, provider, mode, metric)
            if not points:
                continue
            fit = fit_exponent(points)
            slope = f"slope {fit.exponent:.2f}" if fit else "one point"
            ax.loglog([T for T, _ in points], [v for _, v in points], marker="o", color=_colour(provider),
                      label=f"{provider} ({slope})")
        ax.set(title=f"{variant_label(variant)} — {mode}", xlabel="T", ylabel=METRIC_AXIS[metric])
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    path = out_dir / f"{_slug(metric, device, *variant)}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def speedup_bars(results: Results, device: str) -> List[tuple]:
    """(group label, bar label, speed-up) of every tempattn provider over every anchor at T=4096."""
    bars = []
    for variant in results.variants(device):
        for mode in MODES:
            group = variant_label(variant).replace(" ", "\n", 1) + f"\n{mode}"
            for provider in results.tempattn_providers(device, variant):
                fused = results.value(device, variant, provider, mode, "time", HEADLINE_T)
                for anchor in (*ANCHORS, FLOOR):
                    other = results.value(device, variant, anchor, mode, "time", HEADLINE_T)
                    if fused and other:
                        bars.append((group, f"{provider} vs {anchor}", other / fused))
    return bars


def speedup_chart(results: Results, device: str, out_dir: Path) -> Path:
    """Grouped bars (log scale) of the speed-ups at the headline shape; a note when there are none."""
    bars = speedup_bars(results, device)
    groups = list(dict.fromkeys(g for g, _, _ in bars))
    labels = list(dict.fromkeys(b for _, b, _ in bars))
    fig, ax = plt.subplots(figsize=(max(8, 1.8 * len(groups)), 5.5))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        xs = [groups.index(g) + i * width for g, b, _ in bars if b == label]
        ax.bar(xs, [s for _, b, s in bars if b == label], width=width, label=label)
    if bars:
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, fontsize="small")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, f"no tempattn result at T={HEADLINE_T}", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=f"speed-up of tempattn over each anchor at T={HEADLINE_T} ({device})",
           ylabel="anchor time / tempattn time")
    path = out_dir / f"{_slug('speedup', device)}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
