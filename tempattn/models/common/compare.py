"""``python -m tempattn.models compare FAMILY --seeds 3``: a family's model and its baselines over the same seeds.

For each seed ``s`` (``--first-seed`` .. ``--first-seed + --seeds - 1``) every member of the family is trained
by its own command, ``python -m tempattn.models NAME --seed s`` with the same budget (the family's
documented :data:`FAMILIES` budget, then any training options given to ``compare``), so the members of one
seed share the split, the batch order and the budget. The baselines that need no training (per-item
marginal, naive forecasts, unigram, a logistic regression, ...) are read from the same runs' references.

Reported per member and metric: every seed's value, the mean and the sample standard deviation (n - 1).
Each baseline is set against the family's model (the first member) metric by metric: **better** or
**worse** only when the intervals mean ± std do not overlap, **on par** when they do (with one seed: no
verdict); the paired difference (model - baseline, seed by seed) is reported beside it. Every metric is
measured on one split, named in the report: ``test`` where the family has a test split, else
``validation``.

Written to ``--out`` (default ``compare_FAMILY``): ``compare.json`` (the report: date, machine, command,
budget, seeds, per-seed values, summaries, verdicts), ``compare.md`` (the tables) and ``runs/NAME/seedS/``
(each run's ``metrics.json`` and ``model.pt``; checkpoints are removed unless ``--keep-checkpoints``).
"""
import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["Family", "FAMILIES", "summarise", "verdict", "compare", "main"]

Metrics = Dict[str, float]
SPLIT_NAMES = {"test": "test", "val": "validation"}


@dataclasses.dataclass(frozen=True)
class Family:
    """What ``compare`` trains and reads for one family.

    ``models``: the family's model first, then the baselines / controls trained alike; ``metrics``:
    ``(key in the run's final metrics, "min" | "max" | None)``, the direction that is better (None: reported,
    no verdict); ``budget``: the documented training options of every member; ``references(metrics_json)``:
    the untrained baselines of a run as ``{name: {metric: value}}`` on the same split; ``note``: the budget's
    rationale, shown in the report."""
    models: Tuple[str, ...]
    metrics: Tuple[Tuple[str, Optional[str]], ...]
    budget: Tuple[str, ...]
    references: Callable[[dict], Dict[str, Metrics]]
    note: str = ""


def _pick(values: dict, keys: Sequence[str]) -> Metrics:
    return {k: float(values[k]) for k in keys if isinstance(values.get(k), (int, float))}


def _gpcm_references(run: dict) -> Dict[str, Metrics]:
    return {name: _pick(values, ("nll", "accuracy", "qwk")) for name, values in run["references"].items()}


def _migt_references(run: dict) -> Dict[str, Metrics]:
    return {name: _pick(values["test"], ("pinball", "coverage", "crossing_rate"))
            for name, values in run["references"].items()}


def _nll_reference(name: str, nll: float, keys: Tuple[str, str, str]) -> Dict[str, Metrics]:
    """A reference loss in nats as the family's (loss, perplexity, bits) keys."""
    loss, ppl, bits = keys
    return {name: {loss: nll, ppl: math.exp(nll), bits: nll / math.log(2.0)}}


def _kolosis_references(run: dict) -> Dict[str, Metrics]:
    refs = {}
    for key, value in run["references"].items():
        if isinstance(value, (int, float)):
            refs.update(_nll_reference(key.replace("_nll", ""), value, ("val_nll", "val_ppl", "val_bits")))
    return refs


def _char_lm_references(run: dict) -> Dict[str, Metrics]:
    refs = _nll_reference("unigram", run["references"]["unigram_val_loss"], ("loss", "perplexity", "bpc"))
    if isinstance(run["references"].get("optimum"), (int, float)):
        refs.update(_nll_reference("optimum", run["references"]["optimum"], ("loss", "perplexity", "bpc")))
    return refs


def _tsa_references(run: dict) -> Dict[str, Metrics]:
    return {"logreg_last_event": _pick(run["references"]["baseline_logreg_last_event"], ("roc_auc", "pr_auc"))}


FAMILIES: Dict[str, Family] = {
    "gpcm": Family(("gpcm", "attention_gpcm"), (("nll", "min"), ("accuracy", "max"), ("qwk", "max")),
                   ("--dataset", "math1", "--epochs", "8", "--steps-per-epoch", "100", "--threads", "1"),
                   _gpcm_references, "the Swedish maths test 1 (1008 students x 28 items, scores 0-4)"),
    "migt_tvdt": Family(("migt_tvdt",), (("pinball", "min"), ("coverage", None), ("crossing_rate", "min")),
                        ("--dataset", "sp500_nasdaq", "--epochs", "6", "--steps-per-epoch", "40", "--threads", "1"),
                        _migt_references, "S&P 500 + NASDAQ daily; coverage: nominal 0.90, no direction"),
    "kolosis": Family(("kolosis", "kolosis_baseline", "kolosis_plain", "kolosis_relpos"),
                      (("val_nll", "min"), ("val_ppl", "min"), ("val_bits", "min")),
                      ("--dataset", "shakespeare", "--epochs", "5", "--steps-per-epoch", "100", "--context", "64",
                       "--val-windows", "128", "--threads", "1"), _kolosis_references,
                      "Shakespeare characters; 500 steps, short of convergence"),
    "char_lm": Family(("char_lm", "char_lstm"), (("loss", "min"), ("perplexity", "min"), ("bpc", "min")),
                      ("--dataset", "alice", "--epochs", "5", "--steps-per-epoch", "200", "--context", "64",
                       "--threads", "1"), _char_lm_references,
                      "Alice in Wonderland characters; the LSTM has char_lm's parameter count"),
    "tsa": Family(("tsa",), (("roc_auc", "max"), ("pr_auc", "max")),
                  ("--dataset", "cdnow", "--epochs", "6", "--steps-per-epoch", "200", "--batch-size", "128",
                   "--threads", "1"), _tsa_references, "CDNOW purchases with injected anomaly labels (semi-synthetic)"),
}
"""The documented budgets: all five families, 3 seeds each, take about 20 minutes of one core (CPU time
measured on the project's 2-core machine; wall time on a shared machine is longer)."""

# training options that compare sets itself
_OWNED = ("--seed", "--out", "--resume")


def summarise(values: Sequence[float]) -> Dict[str, float]:
    """``{"mean", "std", "n"}``: ``std`` is the sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def verdict(model: Dict[str, float], baseline: Dict[str, float], direction: Optional[str]) -> str:
    """The model against a baseline on one metric, from two :func:`summarise` results: "better" / "worse"
    when the intervals mean ± std do not overlap, "on par" when they do, "n/a" with one seed or no direction."""
    if direction is None or model["n"] < 2 or baseline["n"] < 2:
        return "n/a"
    low, high = sorted(((model["mean"] - model["std"], model["mean"] + model["std"]),
                        (baseline["mean"] - baseline["std"], baseline["mean"] + baseline["std"])))
    if low[1] >= high[0]:
        return "on par"
    model_higher = model["mean"] > baseline["mean"]
    return "better" if model_higher == (direction == "max") else "worse"


def _run(name: str, argv: List[str]) -> Tuple[dict, Dict[str, float]]:
    """Train ``name`` by its family's command; its metrics.json and ``{"seconds", "cpu_seconds"}`` (wall time and
    this process's CPU time, every thread: on a shared machine the CPU time is the steadier measure)."""
    from .. import family_of
    train = importlib.import_module(f"tempattn.models.{family_of(name)}.train")
    out = pathlib.Path(argv[argv.index("--out") + 1])
    started, cpu_started = time.perf_counter(), time.process_time()
    status = train.main([name, *argv])
    seconds = {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    if status:
        raise RuntimeError(f"compare: `python -m tempattn.models {name} {shlex.join(argv)}` exited {status}")
    return json.loads((out / "metrics.json").read_text()), seconds


def _cpu_model() -> str:
    try:  # Linux names the CPU model here; platform.processor() often says only "x86_64"
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> Dict[str, object]:
    return {"platform": platform.platform(), "processor": _cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def compare(family: str, seeds: Sequence[int], out: pathlib.Path, options: Sequence[str] = (),
            models: Optional[Sequence[str]] = None, keep_checkpoints: bool = False,
            say: Callable[[str], None] = print, command: Optional[str] = None) -> dict:
    """Train every member of ``family`` (or ``models``, the family's model first) for each seed and return the
    report (also written to ``out/compare.json`` and ``out/compare.md``)."""
    spec = FAMILIES[family]
    members = tuple(models or spec.models)
    argv_budget = [*spec.budget, *options]
    keys = [key for key, _ in spec.metrics]
    per_seed: Dict[str, Dict[int, Metrics]] = {}
    extras: Dict[str, Dict[str, object]] = {}
    split = None
    started, cpu_started = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()  # a run without --threads gets the same count whatever ran before it
    for seed in seeds:
        for name in members:
            torch.set_num_threads(threads)
            run_dir = out / "runs" / name / f"seed{seed}"
            argv = [*argv_budget, "--seed", str(seed), "--out", str(run_dir), "--quiet"]
            say(f"== compare {family}: {name}, seed {seed}")
            run, seconds = _run(name, argv)
            if not keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            run_split = run["final_split"]
            if split not in (None, run_split):
                raise RuntimeError(f"compare: {name} reports on {run_split!r}, the others on {split!r}")
            split = run_split
            final = run["final"][run_split]
            per_seed.setdefault(name, {})[seed] = {**_pick(final, keys), **seconds,
                                                   "best_epoch": float(run["best_epoch"])}
            extras[name] = {"n_parameters": run["n_parameters"], "kind": "trained"}
            if name == members[0]:
                for ref, values in spec.references(run).items():
                    per_seed.setdefault(ref, {})[seed] = values
                    extras[ref] = {"n_parameters": None, "kind": "reference (untrained, from the same runs)"}
    report = _report(family, spec, members, seeds, per_seed, extras, SPLIT_NAMES.get(split, split), list(options),
                     {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started},
                     command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    (out / "compare.md").write_text(markdown(report))
    return report


def _report(family: str, spec: Family, members: Sequence[str], seeds: Sequence[int],
            per_seed: Dict[str, Dict[int, Metrics]], extras: Dict[str, dict], split: str, options: List[str],
            seconds: Dict[str, float], command: Optional[str]) -> dict:
    directions = dict(spec.metrics)
    rows = {}
    for name in [*members, *(n for n in per_seed if n not in members)]:  # the trained members, then references
        by_seed = per_seed[name]
        metrics = sorted({key for values in by_seed.values() for key in values},
                         key=lambda k: (k not in directions, list(directions).index(k) if k in directions else 0, k))
        rows[name] = {**extras[name], "per_seed": {str(s): v for s, v in by_seed.items()},
                      "summary": {k: summarise([by_seed[s][k] for s in seeds if k in by_seed[s]]) for k in metrics}}
    primary = members[0]
    verdicts = {}
    for name, row in rows.items():
        if name == primary:
            continue
        verdicts[name] = {}
        for key, direction in spec.metrics:
            if key not in row["summary"] or key not in rows[primary]["summary"]:
                continue
            paired = [rows[primary]["per_seed"][str(s)][key] - row["per_seed"][str(s)][key] for s in seeds]
            verdicts[name][key] = {"model": verdict(rows[primary]["summary"][key], row["summary"][key], direction),
                                   "paired_difference": summarise(paired)}
    return {"schema": 1, "family": family, "model": primary, "baselines": [n for n in rows if n != primary],
            "split": split, "seeds": list(seeds), "budget": list(spec.budget), "options": options,
            "budget_note": spec.note,
            "metrics": {k: d for k, d in spec.metrics},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(), "command": command, "wall_seconds": seconds["seconds"],
            "cpu_seconds": seconds["cpu_seconds"], "models": rows, "verdicts": verdicts}


def _cell(summary: Optional[Dict[str, float]], digits: int = 4) -> str:
    if summary is None:
        return "—"
    if summary["n"] < 2:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def markdown(report: dict) -> str:
    """The report as Markdown: mean ± std per member and metric, the verdicts, and the per-seed table."""
    keys = list(report["metrics"])
    lines = [f"### compare {report['family']}: {report['split']} split, seeds {report['seeds']}", "",
             f"Budget: `{shlex.join(report['budget'])}` ({report['budget_note']})"
             + (f", then `{shlex.join(report['options'])}`" if report["options"] else "") + f"; {report['date']}; "
             f"{report['wall_seconds']:.0f} s wall, {report['cpu_seconds']:.0f} s CPU in all.", "",
             "| model | parameters | " + " | ".join(keys) + " | seconds per run (wall / CPU) |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for name, row in report["models"].items():
        cells = [_cell(row["summary"].get(k)) for k in keys]
        lines.append(f"| `{name}` | {row['n_parameters'] if row['n_parameters'] is not None else '—'} | "
                     + " | ".join(cells) + f" | {_cell(row['summary'].get('seconds'), 0)} / "
                     f"{_cell(row['summary'].get('cpu_seconds'), 0)} |")
    lines += ["", f"`{report['model']}` against each baseline (intervals mean ± std; paired difference model − "
                  "baseline):", "", "| baseline | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, by_metric in report["verdicts"].items():
        cells = [f"{by_metric[k]['model']} ({_cell(by_metric[k]['paired_difference'])})" if k in by_metric else "—"
                 for k in keys]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Per seed:", "", "| model | seed | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, row in report["models"].items():
        for seed, values in row["per_seed"].items():
            lines.append(f"| `{name}` | {seed} | " + " | ".join(f"{values[k]:.4f}" if k in values else "—"
                                                                for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tempattn.models compare", description=__doc__.split("\n")[0],
        epilog="Other options (e.g. --epochs 2 --threads 1) are training options, passed to every run after the "
               "family's budget: " + "; ".join(f"{k}: {shlex.join(f.budget)}" for k, f in FAMILIES.items()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)  # --seed is not --seeds
    parser.add_argument("family", choices=list(FAMILIES), help="the family: its model and baselines")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="the seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--models", default=None,
                        help="comma-separated members to train (default: the family's model and its baselines)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="output directory (default: compare_FAMILY)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints/")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, options = parser.parse_known_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    owned = [o for o in options if o.split("=")[0] in _OWNED]
    if owned:
        parser.error(f"{', '.join(owned)}: compare sets --seed and --out of each run itself (see --seeds, --out)")
    members = FAMILIES[args.family].models
    if args.models is not None:
        members = tuple(m.strip() for m in args.models.split(",") if m.strip())
        known = _family_models(args.family)
        if not members or any(m not in known for m in members):
            parser.error(f"--models: expected names of the {args.family} family ({', '.join(known)}), "
                         f"got {args.models!r}")
    out = args.out or pathlib.Path(f"compare_{args.family}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    report = compare(args.family, seeds, out, options, members, args.keep_checkpoints,
                     command="python -m tempattn.models compare " + shlex.join(argv))
    print(markdown(report))
    print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")
    return 0


def _family_models(family: str) -> List[str]:
    from .. import family_of, model_names
    return [name for name in model_names() if family_of(name) == family]
