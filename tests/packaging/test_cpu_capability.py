"""Runtime ISA dispatch of the CPU kernels (csrc/cpu/dispatch.h): the level in use, the
TEMPATTN_CPU_CAPABILITY override, and that the binary runs nothing above the x86-64 baseline
before it checks the CPU (isa_audit.py). `make test-isa` runs this file again under each level."""
import os
import platform
import shutil
import subprocess
import sys
import textwrap

import pytest

import tempattn

from . import isa_audit

CPU = tempattn.backends()["cpu"]
LEVELS = ("default", "avx2", "avx512")
FORCED = os.environ.get("TEMPATTN_CPU_CAPABILITY")
X86 = platform.machine().lower() in ("x86_64", "amd64")

pytestmark = pytest.mark.skipif(CPU["capabilities"] is None, reason=f"no CPU kernels here: {CPU['reason']}")
# Checks of the binary or of other levels: the same under every level, so they run in the unforced pass only.
once = pytest.mark.skipif(bool(FORCED), reason="level-independent: runs without TEMPATTN_CPU_CAPABILITY")


def python(code: str, **env) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (the level is chosen once per process) with env overrides (None: unset)."""
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                          timeout=300)


def test_levels_are_listed_lowest_first_and_start_with_default():
    levels = CPU["capabilities"]
    assert levels[0] == "default"
    assert list(levels) == sorted(levels, key=LEVELS.index) and set(levels) <= set(LEVELS)
    if X86 and CPU["capability"] != "default":
        assert "avx2" in levels


def test_capability_is_the_widest_runnable_or_the_forced_level():
    widest = CPU["capabilities"][-1]
    expected = widest if not FORCED else min(FORCED.lower(), widest, key=LEVELS.index)
    assert CPU["capability"] == expected


@once
def test_each_level_is_forced_by_the_environment_and_computes_the_same():
    code = """
        import torch, tempattn
        torch.manual_seed(0)
        q, k, v = (torch.randn(2, 3, 77, 24) for _ in range(3))
        lg, al = -torch.rand(3, 3), torch.randn(3, 3)
        outs = [tempattn.masked_sdpa(q, k, v, causal=True), tempattn.relpos_attention(q, k, v, torch.randn(3, 6), window=5),
                tempattn.decay_attention(q, k, v, lg, al)]
        print(tempattn.backends()["cpu"]["capability"], *[float(o.double().sum()) for o in outs])
    """
    results = {}
    for level in CPU["capabilities"]:
        done = python(code, TEMPATTN_CPU_CAPABILITY=level)
        assert done.returncode == 0, done.stderr
        reported, *sums = done.stdout.split()
        assert reported == level
        results[level] = [float(s) for s in sums]
    for level, sums in results.items():
        assert sums == pytest.approx(results["default"], rel=1e-4, abs=1e-3), level


@once
def test_an_unknown_level_is_a_value_error_naming_the_variable():
    done = python("""
        import torch, tempattn
        status = tempattn.backends()["cpu"]
        assert status["capability"] is None and "TEMPATTN_CPU_CAPABILITY" in status["capability_error"], status
        try:
            tempattn.masked_sdpa(*(torch.randn(1, 1, 4, 8) for _ in range(3)))
        except ValueError as exc:
            print(exc)
    """, TEMPATTN_CPU_CAPABILITY="avx9000")
    assert done.returncode == 0, done.stderr
    assert "TEMPATTN_CPU_CAPABILITY must be one of default, avx2, avx512" in done.stdout
    assert "got 'avx9000'" in done.stdout


@once
@pytest.mark.skipif(CPU["capabilities"][-1] == "avx512", reason="this CPU runs every level: nothing to lower")
def test_a_level_above_the_cpu_is_lowered_with_a_warning():
    done = python("""
        import warnings, torch, tempattn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(tempattn.backends()["cpu"]["capability"])
        print(*[str(w.message) for w in caught], sep="\\n")
    """, TEMPATTN_CPU_CAPABILITY="avx512")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == CPU["capabilities"][-1]
    assert "TEMPATTN_CPU_CAPABILITY=avx512 asks for a level that" in done.stdout


# ----------------------------------------------------------------------------------- the binary

needs_binutils = pytest.mark.skipif(not (X86 and shutil.which("objdump") and shutil.which("readelf")),
                                    reason="the ISA audit reads x86-64 code with binutils (objdump, readelf)")


@once
@needs_binutils
def test_nothing_above_the_baseline_runs_before_the_isa_check():
    import tempattn._C
    result = isa_audit.audit(tempattn._C.__file__)
    assert result.offenders == {}, "\n".join(result.offenders)
    assert result.before_check > 100  # the audit did follow the baseline code
    for level in ("avx2", "avx512"):
        if level in CPU["capabilities"]:
            assert result.in_levels[level.upper()] > 50, result.in_levels


AUDIT_FIXTURES = {
    # AVX2 code in a static initialiser: it runs when the library loads, before any check.
    "initialiser": """
        #include <immintrin.h>
        static float table[8];
        __attribute__((target("avx2,fma"), noinline)) static int fill(float x) {
          _mm256_storeu_ps(table, _mm256_fmadd_ps(_mm256_set1_ps(x), _mm256_set1_ps(x), _mm256_set1_ps(x)));
          return 1;
        }
        static int filled = fill(static_cast<float>(__builtin_cpu_supports("sse2")));
        extern "C" float get(int i) { return table[i]; }
    """,
    # AVX2 code called from the baseline without a check, through a helper outside the level.
    "unchecked": """
        #include <immintrin.h>
        __attribute__((target("avx2"), noinline)) float twice(float x) {
          return _mm256_cvtss_f32(_mm256_add_ps(_mm256_set1_ps(x), _mm256_set1_ps(x)));
        }
        extern "C" float api(float x) { return twice(x); }
    """,
    # Dispatch done right: AVX2 code in namespace AVX2 (and a helper only it calls), reached after the check.
    "dispatched": """
        #include <immintrin.h>
        __attribute__((target("avx2"), noinline)) static __m256 add(__m256 a) { return _mm256_add_ps(a, a); }
        namespace AVX2 {
        __attribute__((target("avx2"), noinline)) float twice(float x) { return _mm256_cvtss_f32(add(_mm256_set1_ps(x))); }
        }
        extern "C" float api(float x) { return __builtin_cpu_supports("avx2") ? AVX2::twice(x) : x + x; }
    """,
}


@once
@needs_binutils
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("fixture", sorted(AUDIT_FIXTURES))
def test_the_audit_tells_unchecked_wide_code_from_dispatched(fixture, tmp_path):
    source = tmp_path / f"{fixture}.cpp"
    source.write_text(textwrap.dedent(AUDIT_FIXTURES[fixture]))
    library = tmp_path / f"lib{fixture}.so"
    subprocess.run(["g++", "-O2", "-fPIC", "-shared", str(source), "-o", str(library)], check=True)
    offenders = isa_audit.audit(str(library)).offenders
    if fixture == "dispatched":
        assert offenders == {}
    else:
        assert offenders, f"the audit missed the {fixture} AVX2 code"


@once
@pytest.mark.skipif(not (X86 and shutil.which("qemu-x86_64") and os.environ.get("TEMPATTN_TEST_QEMU") == "1"),
                    reason="opt-in (about 2 minutes): TEMPATTN_TEST_QEMU=1 with qemu-user installed")
@pytest.mark.skipif("avx512" not in CPU["capabilities"], reason="checks an AVX-512 build on an AVX2-only CPU")
def test_an_avx512_build_runs_on_an_avx2_cpu_under_qemu():
    """qemu's Haswell model has AVX2 but no AVX-512 (qemu cannot run AVX-512 code at all): the kernels
    pick avx2, forcing avx512 is lowered with a warning, and no AVX-512 instruction runs."""
    code = textwrap.dedent("""
        import warnings, torch, tempattn
        warnings.simplefilter("always")
        q, k, v = (torch.randn(1, 2, 40, 16) for _ in range(3))
        out = tempattn.decay_attention(q, k, v, -torch.rand(2, 3), torch.randn(2, 3))
        print(tempattn.backends()["cpu"]["capability"], bool(torch.isfinite(out).all()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TEMPATTN_CPU_CAPABILITY"}
    for forced in (None, "avx512"):
        run_env = dict(env, **({"TEMPATTN_CPU_CAPABILITY": forced} if forced else {}))
        done = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code], env=run_env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-2:] == ["avx2", "True"], done.stdout
        if forced:
            assert "this CPU cannot run" in done.stderr
