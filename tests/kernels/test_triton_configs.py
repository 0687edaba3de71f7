"""The Triton launch configurations (kernels/common/configs.py) and the compile gate's coverage
(tools/triton_check.py). Plain Python: no GPU and no interpreter needed. `make triton-check` compiles them."""
import importlib.util
import itertools
import os
from pathlib import Path

import pytest

pytest.importorskip("triton")
from tempattn.kernels.common import configs as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARCHS = (80, 86, 89, 90, 100)
HEAD_DIMS = (16, 32, 64, 128, 256)
MODS = [("masked_sdpa", False), ("masked_sdpa", True), ("relpos_attention", False), ("decay_attention", True)]


@pytest.fixture(autouse=True)
def not_interpreting(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _gate():
    spec = importlib.util.spec_from_file_location("triton_check", ROOT / "tools" / "triton_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ptxas_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return os.path.exists(get_ptxas(80).path)
    except Exception:  # noqa: BLE001 - any failure to find it means: skip
        return False


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kernel", C.KERNELS)
def test_every_candidate_fits_the_arch_shared_memory(arch, kernel):
    for dtype in C.DTYPES:
        for d in HEAD_DIMS:
            for dv in (d, 16, 256):
                for (mod, dropout), aligned in itertools.product(MODS, (True, False)):
                    cands = C.candidates(kernel, arch, dtype, d, dv, mod, dropout, aligned)
                    assert cands, (kernel, arch, dtype, d, dv, mod)
                    for c in cands:
                        assert C.smem_estimate(kernel, c, dtype, d, dv, arch, mod) <= C.smem_limit(arch), \
                            (c, arch, dtype, d)
                        assert c.block_m >= 16 and c.block_n >= 16 and c.num_stages >= 1


def test_dq_tiles_suit_the_relpos_band_carry():
    """relpos's dQ band carries diagonal sums from key tile to key tile: BLOCK_M <= BLOCK_N."""
    for arch in ARCHS:
        for dtype in C.DTYPES:
            for d in HEAD_DIMS:
                for dropout, aligned in itertools.product((False, True), (True, False)):
                    for c in C.candidates("dq", arch, dtype, d, d, "relpos_attention", dropout, aligned):
                        assert c.block_m <= c.block_n, (arch, dtype, d, c)


def test_backward_kernels_are_not_autotuned_and_forward_configs_are_all_listed():
    """(An sm_86 / sm_89 part, 99 KB of shared memory, may get a shrunk config outside the lists.)"""
    every = set(C.all_forward_configs())
    for arch in (80, 90, 100):
        for dtype in C.DTYPES:
            for d in HEAD_DIMS:
                for (mod, dropout), aligned in itertools.product(MODS, (True, False)):
                    assert len(C.candidates("dkdv", arch, dtype, d, d, mod, dropout, aligned)) == 1
                    assert len(C.candidates("dq", arch, dtype, d, d, mod, dropout, aligned)) == 1
                    assert set(C.candidates("fwd", arch, dtype, d, d, mod, dropout, aligned)) <= every


@pytest.mark.parametrize("name", ["128x64w8s3", "16x32w4s2r168", "64x64w4s1r255"])
def test_config_names_round_trip(name):
    config = C.parse_config(name)
    assert str(config) == name
    options = config.launch_options()
    assert options["num_warps"] == config.num_warps and options.get("maxnreg", 0) == config.maxnreg


def test_unaligned_head_dims_take_their_own_entries():
    """72 (not a multiple of 16) reads _UNALIGNED where it has an entry, 80 / 128 the table's."""
    assert C.is_aligned(80, 128) and not C.is_aligned(128, 72)
    for (arch, cls, weight, kernel, dim), unaligned in C._UNALIGNED.items():
        dtype, mod = {"16": "fp16"}.get(cls, cls), "masked_sdpa" if weight == "light" else "decay_attention"
        args = (kernel, arch, dtype, dim, dim, mod, weight == "heavy")
        assert C.candidates(*args, aligned=False) == unaligned
        assert C.candidates(*args, aligned=True) == C._TABLE[(arch, cls, weight, kernel, dim)]


def test_redo_pass_config_is_small_and_fixed():
    for d in HEAD_DIMS:
        c = C.redo_config(d, d)
        assert c.num_stages == 1 and c.block_m == 16 and c.block_n * d <= 32 * 128


def test_gate_compiles_every_redo_pass():
    """Each (kernel, op, variant, dtype, head dim, arch) the gate compiles has its redo pass compiled too."""
    gate = _gate()
    specs = gate.specs()
    main = {(s.kernel, s.op, s.variant, s.dtype, s.head_dim, s.arch) for s in specs if s.kernel in C.KERNELS}
    redo = {(s.kernel.removesuffix(gate.REDO), s.op, s.variant, s.dtype, s.head_dim, s.arch) for s in specs
            if s.kernel.endswith(gate.REDO)}
    assert main == redo


def test_interpreter_has_one_config(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert C.candidates("fwd", 90, "bf16", 128, 128) == [C.INTERPRETER_CONFIG]
    assert C.all_forward_configs() == [C.INTERPRETER_CONFIG]


def test_arch_limits():
    assert C.smem_limit(80) == 166912 and C.smem_limit(90) == 232448
    assert C.smem_limit(86) == 101376 and C.smem_limit(89) == 101376
    assert C.smem_limit(91) == 232448  # an unknown arch reads the nearest lower known one


def test_gate_covers_every_operator_flag_dtype_head_dim_and_arch():
    gate = _gate()
    specs = gate.specs()
    names = {(s.kernel, s.op, s.variant, s.dtype, s.head_dim, s.arch) for s in specs}
    for arch in (80, 90):
        for kernel in C.KERNELS:
            for dtype in ("fp16", "bf16", "fp32"):
                for d in HEAD_DIMS:
                    assert (kernel, "masked_sdpa", "mask", dtype, d, arch) in names
                    assert (kernel, "decay_attention", "all", dtype, d, arch) in names
            for op in ("masked_sdpa", "relpos_attention", "decay_attention"):
                assert any(n[:3] == (kernel, op, "all") and n[5] == arch for n in names)
            assert any(n[0] == kernel and n[3] == "tf32" and n[5] == arch for n in names)
            assert any(n[0] == kernel and n[4] == gate.ODD_HEAD_DIM and n[5] == arch for n in names)
    # every forward autotune config of the light fp16 entries is compiled
    for arch in (80, 90):
        for d in (64, 128, 256):
            want = {str(c) for c in C.candidates("fwd", arch, "fp16", d, d)}
            got = {s.config for s in specs if s.kernel == "fwd" and s.arch == arch and s.head_dim == d
                   and s.dtype == "fp16" and s.variant == "mask"}
            assert want == got


def test_gate_operands_match_the_variant_flags():
    gate = _gate()
    for spec in gate.specs((80,))[:40]:
        q, k, v, kw = gate._operands(spec)
        if spec.variant == "all":
            assert kw["dropout_p"] > 0 and kw["key_valid"] is not None and kw["key_bias"] is not None
            if spec.op != "masked_sdpa":
                assert kw["window"] >= 0
        if spec.variant == "plain":
            assert kw["key_valid"] is None and kw["dropout_p"] == 0 and not kw["causal"]


@pytest.mark.skipif(not _ptxas_available(), reason="needs the ptxas that ships with triton")
def test_gate_compiles_one_specialisation(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    gate = _gate()
    spec = next(s for s in gate.specs((80,)) if s.kernel == "fwd" and s.variant == "mask" and s.head_dim == 16)
    r, = gate._compile_group([spec])
    assert r.ok, r.error
    assert r.mma > 0 and r.registers > 0 and not gate.check(r, C)


@pytest.mark.skipif(not _ptxas_available(), reason="needs the ptxas that ships with triton")
def test_gate_shares_the_front_end_between_archs(tmp_path, monkeypatch):
    """A group compiles sm_90 from the TTIR that the sm_80 compile generated: the same resources as an sm_90
    compile with its own front end (the code generator reads no arch-dependent option for these kernels)."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    gate = _gate()
    s80, s90 = (gate.Spec("norm", "decay_attention", "all", "fp16", 16, arch, "16x32w4s2") for arch in (80, 90))
    assert gate._compile_key(s80)[0] == gate._compile_key(s90)[0]
    _, shared = gate._compile_group([s80, s90])
    own, = gate._compile_group([s90])
    assert shared.ok and own.ok, (shared.error, own.error)
    fields = ("registers", "spill_stores", "spill_loads", "shared", "mma", "wgmma", "kernel_hash")
    assert [getattr(shared, f) for f in fields] == [getattr(own, f) for f in fields]


@pytest.mark.skipif(not _ptxas_available(), reason="needs the ptxas that ships with triton")
@pytest.mark.parametrize("kernel", C.KERNELS)
def test_gate_line_info_changes_no_resource(kernel, tmp_path, monkeypatch):
    """The gate compiles without line info (faster); a launch compiles with it: the same registers, spills,
    shared memory and tensor-core instructions either way."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    gate = _gate()
    spec = gate.Spec(kernel, "decay_attention", "all", "fp16", 32, 90, "16x32w4s2")
    fields = ("registers", "spill_stores", "spill_loads", "shared", "mma", "wgmma")
    (plain,), (lined,) = gate._compile_group([spec]), gate._compile_group([spec], line_info=True)
    assert plain.ok and lined.ok, (plain.error, lined.error)
    assert [getattr(plain, f) for f in fields] == [getattr(lined, f) for f in fields]


# The launches the issue found over the A100's 166,912 B (float32, IEEE dots): the launcher's old tiles
# (BLOCK_M x BLOCK_N 64x32 at D <= 128, 32x32 at D = 256) with num_warps=4, num_stages=3.
OVERFLOWING_ON_SM80 = [("dkdv", 128, "64x32w4s3"), ("fwd", 256, "32x32w4s3"), ("dkdv", 256, "32x32w4s3")]


@pytest.mark.skipif(not _ptxas_available(), reason="needs the ptxas that ships with triton")
@pytest.mark.parametrize("kernel, head_dim, old", OVERFLOWING_ON_SM80)
def test_pruning_matches_compiled_shared_memory(kernel, head_dim, old, tmp_path, monkeypatch):
    """Compiled for sm_80 (no GPU): the old config takes more shared memory than sm_80 has and the estimate says
    so (pruned); the config the launcher selects compiles within the limit and within its estimate."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # a fresh cache: ptxas runs, its -v log is read
    gate = _gate()
    limit = C.smem_limit(80)
    spec = gate.Spec(kernel, "masked_sdpa", "mask", "fp32", head_dim, 80, old)
    rejected, = gate._compile_group([spec])
    assert rejected.ok, rejected.error
    assert rejected.shared > limit and rejected.shared_estimate > limit, (rejected.shared, rejected.shared_estimate)
    chosen = C.candidates(kernel, 80, "fp32", head_dim, head_dim, "masked_sdpa")
    assert str(C.parse_config(old)) not in map(str, chosen)
    selected, = gate._compile_group([gate.Spec(kernel, "masked_sdpa", "mask", "fp32", head_dim, 80, str(chosen[0]))])
    assert selected.ok, selected.error
    assert selected.shared <= selected.shared_estimate <= limit, (selected.shared, selected.shared_estimate)
