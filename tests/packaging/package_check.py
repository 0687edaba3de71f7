"""The packaging check: `make package-check` (CI runs it after `make test`).

From a clean copy of the checkout (the files git tracks plus the untracked ones it does not ignore:
what a fresh clone of the commit holds):
  1. build an sdist (the setuptools PEP 517 hook, in this interpreter);
  2. build a wheel from that sdist with pip's default build isolation: pip installs pyproject.toml's
     build requirements (torch==2.13.*, found in the configured index or local wheels) in a fresh
     build environment, so this is what `pip install .` / `pip wheel .` do, and it also proves the
     sdist holds every file the build needs;
  3. check both archives' contents and the wheel's metadata (torch pin, extras);
  4. install the wheel into a fresh venv (runtime pins from requirements.txt as constraints, so
     pip reuses the cached wheels) and, from a directory outside the checkout, run smoke.py at
     each CPU ISA level this machine runs, and the ISA audit of the installed tempattn._C;
  5. check that `python -m tempattn.bench` without the [bench] extra names it, install the extra,
     and run one quick benchmark case, the report going to the current directory's default.
Prints the time of each step. Usage: python tests/packaging/package_check.py [--workdir DIR] [--keep]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BENCH_CASE = "test_masked_sdpa and tempattn_cpu-fwd-T1024"

_timings = []


@contextmanager
def step(name):
    print(f"== {name}", flush=True)
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    _timings.append((name, elapsed))
    print(f"   {elapsed:.0f} s", flush=True)


def run(command, *, cwd=None, env=None, log=None, check=True):
    """Runs a command; its output goes to `log` (a path) if given, else through. Raises on failure."""
    printable = " ".join(str(c) for c in command)
    print(f"   + {printable}", flush=True)
    if log is None:
        result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, text=True, capture_output=True)
        output = result.stdout + result.stderr
    else:
        with open(log, "w") as f:
            result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, text=True, stdout=f,
                                    stderr=subprocess.STDOUT)
        output = Path(log).read_text()
    if check and result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        sys.exit(f"package check failed: `{printable}` exited {result.returncode}:\n{tail}")
    return result.returncode, output


def clean_copy(dest: Path):
    """The checkout's tracked and untracked-but-not-ignored files (a fresh clone's), copied to dest."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def clean_env():
    """This process's environment without what would let the checkout leak into the installed package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TEMPATTN_CPU_CAPABILITY", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def check_sdist(path: Path):
    with tarfile.open(path) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    required = ["pyproject.toml", "setup.py", "csrc/extension.cpp", "csrc/cpu/dispatch.h", "csrc/cpu/bindings.cpp",
                "csrc/cpu/common/attention_core.h", "csrc/cpu/kernels/masked_sdpa.cpp", "kernels/common/core.py",
                "benchmarks/conftest.py", "benchmarks/pytest.ini", "tempattn/__init__.py"]
    missing = [n for n in required if n not in names]
    stray = [n for n in names if n.endswith((".so", ".o")) or n.startswith(("tests/", "build/"))]
    if missing or stray:
        sys.exit(f"package check failed: sdist {path.name}: missing {missing}, unexpected {stray[:10]}")


def check_wheel(path: Path):
    with zipfile.ZipFile(path) as whl:
        names = set(whl.namelist())
        metadata = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    required = ["tempattn/__init__.py", "tempattn/kernels/common/core.py", "tempattn/bench/__main__.py",
                "tempattn/bench/suite/conftest.py", "tempattn/bench/suite/pytest.ini",
                "tempattn/bench/suite/bench_cpu_masked_sdpa.py"]
    missing = [n for n in required if n not in names]
    extension = [n for n in names if n.startswith("tempattn/_C") and n.endswith(".so")]
    stray = [n for n in names if n.startswith(("tests/", "csrc/", "benchmarks/")) or n.endswith(".o")]
    requires = [line for line in metadata.splitlines() if line.startswith(("Requires-Dist:", "Provides-Extra:"))]
    extras = {line.split(":", 1)[1].strip() for line in requires if line.startswith("Provides-Extra:")}
    torch_pin = [line for line in requires if line.startswith("Requires-Dist: torch") and "extra" not in line]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if len(extension) != 1:
        problems.append(f"expected one tempattn/_C*.so, got {extension}")
    if stray:
        problems.append(f"unexpected {stray[:10]}")
    if not {"bench", "models", "triton"} <= extras:
        problems.append(f"extras {sorted(extras)} lack bench / models / triton")
    if len(torch_pin) != 1 or "==" not in torch_pin[0]:
        problems.append(f"torch requirement {torch_pin} is not pinned to the minor version built against")
    if problems:
        sys.exit(f"package check failed: wheel {path.name}: " + "; ".join(problems))
    print(f"   {path.name}: {len(names)} files; " + "; ".join(requires))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="where to work (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tempattn-package-check-"))
    work.mkdir(parents=True, exist_ok=True)
    src, dist, venv, run_dir, logs = (work / d for d in ("src", "dist", "venv", "run", "logs"))
    for d in (src, dist, run_dir, logs):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    env = clean_env()
    constraints = ["-c", str(ROOT / "requirements.txt")]
    started = time.monotonic()
    passed = False
    try:
        with step("clean copy of the checkout"):
            clean_copy(src)
        with step("sdist (PEP 517 build_sdist)"):
            run([sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_sdist({str(dist)!r}))"],
                cwd=src, env=env, log=logs / "sdist.log")
            sdist = next(dist.glob("tempattn-*.tar.gz"))
            check_sdist(sdist)
        with step("wheel from the sdist, default build isolation (pip wheel)"):
            run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, sdist], cwd=work, env=env,
                log=logs / "wheel.log")
            wheel = next(dist.glob("tempattn-*.whl"))
            check_wheel(wheel)
        with step("fresh venv + pip install the wheel"):
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", venv], env=env)
            python = venv / "bin" / "python"
            run([python, "-m", "pip", "install", "-q", *constraints, wheel], cwd=run_dir, env=env,
                log=logs / "install.log")
        with step("smoke test outside the checkout, at each CPU ISA level"):
            shutil.copy2(HERE / "smoke.py", run_dir / "smoke.py")
            _, out = run([python, "smoke.py"], cwd=run_dir, env=env)
            report = json.loads(out.strip().splitlines()[-1])
            site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            cwd=run_dir, env=env)[1].strip())
            if not Path(report["file"]).resolve().is_relative_to(site.resolve()):
                sys.exit(f"package check failed: tempattn imported from {report['file']}, not {site}")
            print(f"   auto: {report}")
            for level in report["capabilities"][:-1]:
                _, out = run([python, "smoke.py"], cwd=run_dir, env={**env, "TEMPATTN_CPU_CAPABILITY": level})
                print(f"   {level}: {out.strip().splitlines()[-1]}")
            if os.uname().machine == "x86_64" and shutil.which("objdump"):
                shutil.copy2(HERE / "isa_audit.py", run_dir / "isa_audit.py")
                _, out = run([python, "isa_audit.py"], cwd=run_dir, env=env)
                print("   " + out.strip().splitlines()[-1])
        with step("python -m tempattn.bench without the [bench] extra names it"):
            code, out = run([python, "-m", "tempattn.bench", "--quick"], cwd=run_dir, env=env, check=False)
            if code == 0 or "tempattn[bench]" not in out:
                sys.exit(f"package check failed: without the [bench] extra, python -m tempattn.bench said:\n{out}")
            print(f"   {out.strip().splitlines()[-1]}")
        with step("install the [bench] extra, one quick benchmark case from the installed suite"):
            run([python, "-m", "pip", "install", "-q", *constraints, f"{wheel}[bench]"], cwd=run_dir, env=env,
                log=logs / "install-bench.log")
            run([python, "-m", "tempattn.bench", "--quick", "-k", BENCH_CASE], cwd=run_dir, env=env,
                log=logs / "bench.log")
            report_dir = run_dir / "tempattn-bench-report"
            for name in ("REPORT.md", "results.csv"):
                if not (report_dir / name).is_file():
                    sys.exit(f"package check failed: no {report_dir / name} (see {logs / 'bench.log'})")
            rows = (report_dir / "results.csv").read_text().splitlines()
            print(f"   {report_dir}: REPORT.md, results.csv ({len(rows) - 1} rows)")
        passed = True
    finally:
        print("== timings: " + ", ".join(f"{name.split(' (')[0]} {t:.0f} s" for name, t in _timings)
              + f"; total {time.monotonic() - started:.0f} s")
        if args.keep or args.workdir or not passed:
            print(f"   work directory kept: {work} (logs in {logs})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("package check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
