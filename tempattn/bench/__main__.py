"""``python -m tempattn.bench [--quick | --full]``: run the benchmark suites, write CSV and report.

Steps: pytest-benchmark over ``benchmarks/`` (in a child process, profile passed through
``$TEMPATTN_BENCH_PROFILE``) -> ``report/raw/<timestamp>-<profile>.json`` ->
``report/results.csv`` -> ``report/REPORT.md`` + ``report/plots/*.png``.
``--from-json RAW`` skips the run and rebuilds the CSV and report from a raw file.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def _require_bench_extra():
    """The report needs matplotlib, the suite pytest and pytest-benchmark: the [bench] extra."""
    import importlib.util
    missing = [m for m in ("matplotlib", "pytest", "pytest_benchmark") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"python -m tempattn.bench needs {', '.join(missing)}: pip install 'tempattn[bench]'")


_require_bench_extra()

from . import convert, report  # noqa: E402  (after the check: report imports matplotlib)
from .cases import PROFILE_ENV  # noqa: E402
from .results import Results, write_csv  # noqa: E402

# The suite: benchmarks/ of a checkout, else the copy installed with the package (tempattn/bench/suite).
_CHECKOUT_SUITE = Path(__file__).resolve().parents[2] / "benchmarks"
_INSTALLED_SUITE = Path(__file__).resolve().parent / "suite"
INSTALLED = not (_CHECKOUT_SUITE / "conftest.py").is_file()
SUITE = _INSTALLED_SUITE if INSTALLED else _CHECKOUT_SUITE
# The report: SUITE/report in a checkout; from an installed package, under the current directory.
DEFAULT_OUT = Path("tempattn-bench-report") if INSTALLED else SUITE / "report"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tempattn.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="profile", action="store_const", const="quick",
                      help="T in {1024, 2048, 4096} (default; under 10 minutes on 2 cores)")
    size.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="T in {1024, 2048, 4096, 8192, 16384}")
    parser.set_defaults(profile="quick")
    parser.add_argument("--suite", type=Path, default=SUITE, help="benchmark suite directory (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory (default: SUITE/report; ./tempattn-bench-report for the installed suite)")
    parser.add_argument("--from-json", type=Path, default=None, help="rebuild CSV and report from this raw JSON")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression selecting cases")
    return parser.parse_args(argv)


def run_suite(suite: Path, profile: str, raw_path: Path, keyword=None) -> int:
    """pytest-benchmark over the suite in a child process; returns its exit code."""
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", str(suite), "-q", "-rs", f"--benchmark-json={raw_path}",
               "--benchmark-sort=fullname", "--benchmark-columns=median,iqr,rounds"]
    if keyword:
        command += ["-k", keyword]
    env = {**os.environ, PROFILE_ENV: profile}
    print("+ " + " ".join(command), flush=True)
    return subprocess.call(command, env=env)


def build_report(raw_path: Path, out_dir: Path) -> Path:
    raw = convert.load(raw_path)
    rows = convert.rows_from_json(raw)
    write_csv(rows, out_dir / "results.csv")
    machine = raw.get("machine_info", {}).get("tempattn", {})
    profile = raw.get("tempattn", {}).get("profile", "?")
    return report.write_report(Results(rows), machine, profile, out_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = args.out or (DEFAULT_OUT if args.suite == SUITE else args.suite / "report")
    raw_path = args.from_json
    status = 0
    if raw_path is None:
        started = time.time()
        raw_path = out_dir / "raw" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.profile}.json"
        status = run_suite(args.suite, args.profile, raw_path, args.keyword)
        print(f"benchmark suite finished in {time.time() - started:.0f} s (pytest exit code {status})")
        if not raw_path.exists():
            print(f"no raw results at {raw_path}", file=sys.stderr)
            return status or 1
    path = build_report(raw_path, out_dir)
    print(f"wrote {out_dir / 'results.csv'} and {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
