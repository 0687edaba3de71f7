"""The host/device maths headers (csrc/common/*.h), compiled as plain C++ and checked directly.

The CPU kernels include these headers, so the CPU suite tests them through the operators too; here
each rule is pinned on its own: the tile ranges against a brute-force enumeration of admissible
pairs, Philox against tempattn's Python definition, the decay mixture against float64 maths, the
backward's coarse-lse row rule, and the mma.sync fragment layouts of the tensor-core kernels against
the PTX ISA's tables.
"""
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tempattn.ops.common.philox import dropout_threshold, philox4x32

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests", "cpu", "shared_headers_check.cpp")
COMPILER = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


@pytest.fixture(scope="module")
def check_binary(tmp_path_factory):
    if COMPILER is None:
        pytest.skip("no C++ compiler (set CXX)")
    binary = tmp_path_factory.mktemp("shared_headers") / "check"
    subprocess.run([COMPILER, "-std=c++17", "-O1", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc"), SOURCE,
                    "-o", str(binary)], check=True, capture_output=True, text=True)
    return str(binary)


def _run(binary, *args):
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_tile_ranges_match_brute_force(check_binary):
    out = _run(check_binary, "band")
    assert out.startswith("band ok"), out
    assert int(out.split()[2]) > 100000  # every geometry, row range, key range and tile pair was visited


@pytest.mark.parametrize("seed", [0, 12345, 2**63 - 1, 2**64 - 1, 0xDEADBEEF00C0FFEE])
def test_philox_matches_the_python_definition(check_binary, seed):
    B, H, Tq, Tk = 2, 3, 5, 7
    words = [int(w) for w in _run(check_binary, "philox", B, H, Tq, Tk, seed).split()]
    idx = [torch.arange(n, dtype=torch.int64) for n in (B, H, Tq, Tk)]
    b, h, i, j = torch.meshgrid(*idx, indexing="ij")
    want, _, _, _ = philox4x32(j, i, h, b, seed)
    assert words == want.flatten().tolist()


@pytest.mark.parametrize("p", [0.0, 1e-9, 0.1, 0.5, 0.999999999, 1 - 2**-40])
def test_dropout_threshold_matches(check_binary, p):
    assert int(_run(check_binary, "threshold", repr(p))) == dropout_threshold(p)


@pytest.mark.parametrize("eps", [0.0, 1e-8, 0.5])
def test_decay_mixture_matches_float64_maths(check_binary, eps):
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    log_gamma = torch.tensor([-0.05, -0.7, -3.0], dtype=torch.float64)
    deltas = torch.tensor([-2.0, 0.0, 1.0, 3.5, 40.0, 1e4], dtype=torch.float64)
    out = _run(check_binary, "decay", repr(eps), 3, *[repr(x) for x in logits.tolist() + log_gamma.tolist()],
               *[repr(d) for d in deltas.tolist()])
    got = torch.tensor([[float(x) for x in line.split()] for line in out.splitlines()], dtype=torch.float64)
    delta = deltas.clamp(min=0)[:, None]
    terms = torch.log_softmax(logits, 0)[None, :] + log_gamma[None, :] * delta
    mix = torch.logsumexp(terms, 1)
    m = torch.logaddexp(mix, torch.tensor(eps, dtype=torch.float64).log()) if eps > 0 else mix
    torch.testing.assert_close(got[:, 0], m, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got[:, 1:], torch.exp(terms - m[:, None]), rtol=1e-12, atol=1e-14)


# (lse, row max, row sum, s) -> coarse? The float32 limit is 2^10 on |lse|; inf, -inf (the empty
# row) and NaN are never coarse.
@pytest.mark.parametrize("lse,coarse", [(3.0, False), (-1023.9, False), (1024.0, True), (-1024.0, True),
                                        (-1e9, True), (5e8, True), (float("inf"), False), (float("-inf"), False),
                                        (float("nan"), False)])
def test_backward_row_norm_renormalises_coarse_rows_only(check_binary, lse, coarse):
    row_max, row_sum, s = lse - 2.0, 4.0, lse - 2.5  # a coarse row's stats: P = exp(-0.5) / 4
    got = _run(check_binary, "rownorm", repr(lse), repr(row_max), repr(row_sum), repr(s)).split()
    is_coarse, shift, inv_sum, p = int(got[0]), *map(float.fromhex, got[1:])
    assert is_coarse == int(coarse)
    f32 = lambda x: torch.tensor(x, dtype=torch.float32).item()
    if coarse:
        assert (shift, inv_sum) == (f32(row_max), 0.25)
        assert p == pytest.approx(math.exp(f32(s) - f32(row_max)) / 4, rel=1e-6)
    elif lse == float("-inf"):
        assert (shift, inv_sum, p) == (lse, 1.0, 0.0)
    elif not math.isfinite(lse):  # NaN propagates; +inf: exp(inf - inf)
        assert (math.isnan(shift) or shift == lse) and inv_sum == 1.0 and math.isnan(p)
    else:
        assert (shift, inv_sum) == (f32(lse), 1.0)
        assert p == pytest.approx(math.exp(f32(s) - f32(lse)), rel=1e-6, abs=1e-30)


def _isa_fragment(frag, lane, e):
    """(row, col) of element e of a lane's fragment, as the PTX ISA's m16n8k16 tables give them
    (floating-point inputs of 16 bits, float32 accumulators)."""
    group, tig = lane // 4, lane % 4
    if frag == "a":  # a0..a7: rows groupID (a0, a1, a4, a5) or groupID + 8; cols tig * 2 + (i & 1) (+ 8 from a4)
        return (group if e in (0, 1, 4, 5) else group + 8, tig * 2 + (e & 1) + (8 if e >= 4 else 0))
    if frag == "b":  # b0..b3: rows tig * 2 + (i & 1) (+ 8 from b2); col groupID
        return (tig * 2 + (e & 1) + (8 if e >= 2 else 0), group)
    return (group if e < 2 else group + 8, tig * 2 + (e & 1))  # c0..c3


def test_mma_fragment_layouts_match_the_ptx_isa(check_binary):
    rows = [line.split() for line in _run(check_binary, "mma").splitlines()]
    got = {(f, int(lane), int(e)): (int(r), int(c)) for f, lane, e, r, c in rows}
    shapes = {"a": (16, 16, 8), "b": (16, 8, 4), "c": (16, 8, 4)}
    assert len(got) == 32 * sum(n for _, _, n in shapes.values())
    for frag, (n_rows, n_cols, per_lane) in shapes.items():
        coords = [got[frag, lane, e] for lane in range(32) for e in range(per_lane)]
        assert coords == [_isa_fragment(frag, lane, e) for lane in range(32) for e in range(per_lane)], frag
        assert sorted(coords) == [(r, c) for r in range(n_rows) for c in range(n_cols)], frag  # each once
    # The kernels feed P's accumulators (two C tiles side by side) straight in as the A fragment of
    # the next product: A element e is element e % 4 of C tile e // 4, 8 columns on.
    for lane in range(32):
        for e in range(8):
            row, col = got["c", lane, e % 4]
            assert got["a", lane, e] == (row, col + 8 * (e // 4))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
