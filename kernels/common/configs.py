"""Launch configurations of the Triton core, by GPU architecture: the one selection function that the
launcher (``launch.py``, arch from ``torch.cuda.get_device_capability`` at run time) and the compile
gate (``kernels/tools/triton_check.py``, arch passed in) both use.

``candidates(kernel, arch, dtype, head_dim, head_dim_v, mod)`` gives the configurations that may run:
the forward's autotune configs (the first is the default, the only one with ``TEMPATTN_TRITON_AUTOTUNE=0``),
or the backward kernels' single configuration (not autotuned, so their bits, parameter gradients
included, do not depend on a timing race). Every candidate has a static shared-memory estimate
(``smem_estimate``) within the architecture's per-block limit (``SMEM_LIMIT``); the gate checks the
compiled kernels against the same limits.

Nothing here imports torch: dtypes are named "fp16", "bf16", "fp32" (IEEE float32 dots) and "tf32"
(float32 inputs, TF32 tensor-core dots).
"""
import os
from dataclasses import dataclass

# Opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes.
SMEM_LIMIT = {70: 98304, 75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448,
              103: 232448, 120: 101376}
KERNELS = ("fwd", "dkdv", "dq")
DTYPES = ("fp16", "bf16", "fp32", "tf32")
ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "tf32": 4}
MODS = ("masked_sdpa", "relpos_attention", "decay_attention")


@dataclass(frozen=True, order=True)
class Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    # ptxas's register budget per thread (the kernel's .maxnreg), 0: ptxas's own choice. ptxas picks a
    # budget by occupancy and spills to meet it: a few bytes, or kilobytes (tf32 128x64w8 on sm_80); an
    # entry that spills under ptxas's choice gets the next occupancy step up instead (see the compile gate).
    maxnreg: int = 0

    def __str__(self):
        return f"{self.block_m}x{self.block_n}w{self.num_warps}s{self.num_stages}" + \
            (f"r{self.maxnreg}" if self.maxnreg else "")

    def launch_options(self) -> dict:
        """Triton's launch options of the configuration (num_warps, num_stages, maxnreg where set)."""
        return dict(num_warps=self.num_warps, num_stages=self.num_stages,
                    **({"maxnreg": self.maxnreg} if self.maxnreg else {}))


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


INTERPRETER_CONFIG = Config(16, 16, 4, 1)


def smem_limit(arch: int) -> int:
    """The per-block opt-in limit of ``arch`` (major * 10 + minor); unknown archs: the nearest lower known."""
    known = [a for a in sorted(SMEM_LIMIT) if a <= arch]
    return SMEM_LIMIT[known[-1]] if known else min(SMEM_LIMIT.values())


def _table_arch(arch: int) -> int:
    """Which table an arch uses: Hopper and later the sm_90 one (wgmma), Ampere / Ada the sm_80 one."""
    return 90 if arch >= 90 else 80


def _dim_bucket(head_dim: int) -> int:
    return 64 if head_dim <= 64 else head_dim  # 16, 32 and 64 share the 64 tiles


def parse_config(name: str) -> Config:
    """The Config of a name such as "128x64w4s3" or "16x32w4s2r168" (``str(config)``)."""
    bm, rest = name.split("x")
    bn, rest = rest.split("w")
    w, rest = rest.split("s")
    st, _, reg = rest.partition("r")
    return Config(int(bm), int(bn), int(w), int(st), int(reg or 0))


def _c(*names):
    """Configs from their names, e.g. _c("128x64w4s3", "64x64w4s2")."""
    return [parse_config(n) for n in names]


# (table arch, dtype class, weight, kernel, head dim bucket) -> configs, the default first.
# dtype class: "16" fp16 / bf16, "tf32", "fp32" (IEEE dots, no tensor cores). weight: "light" for
# masked_sdpa without dropout, "heavy" for dropout or a score modifier (relpos's table gather, decay's
# per-element exp / log), whose extra per-element state needs smaller tiles to stay in registers.
# The dQ kernel keeps BLOCK_M <= BLOCK_N (the relpos band's diagonal carry needs it). The sizes were
# chosen with the compile gate (kernels/tools in tools/triton_check.py): no spill at D <= 128 and
# shared memory within the arch's limit for every entry.
_TABLE = {
    # ---- sm_90 (H100 / H200), 16-bit
    (90, "16", "light", "fwd", 64): _c("128x64w4s3", "128x64w8s3", "64x64w4s3"),
    (90, "16", "light", "fwd", 128): _c("128x64w8s3", "64x64w4s2", "128x128w8s2"),
    (90, "16", "light", "fwd", 256): _c("64x64w4s2", "128x64w8s2"),
    (90, "16", "light", "dkdv", 64): _c("32x64w8s2"),
    (90, "16", "light", "dkdv", 128): _c("32x64w8s2"),
    (90, "16", "light", "dkdv", 256): _c("32x64w8s1"),
    (90, "16", "light", "dq", 64): _c("64x64w4s3"),
    (90, "16", "light", "dq", 128): _c("64x64w8s2"),
    (90, "16", "light", "dq", 256): _c("32x64w8s2"),
    (90, "16", "heavy", "fwd", 64): _c("64x32w8s2"),
    (90, "16", "heavy", "fwd", 128): _c("64x32w8s2"),
    (90, "16", "heavy", "fwd", 256): _c("32x32w8s1"),
    (90, "16", "heavy", "dkdv", 64): _c("32x64w8s2"),
    (90, "16", "heavy", "dkdv", 128): _c("32x32w8s2"),
    (90, "16", "heavy", "dkdv", 256): _c("16x32w8s1"),
    (90, "16", "heavy", "dq", 64): _c("16x32w8s2"),
    (90, "16", "heavy", "dq", 128): _c("16x32w8s2"),
    (90, "16", "heavy", "dq", 256): _c("16x32w8s1"),
    # ---- sm_80 (A100), 16-bit
    (80, "16", "light", "fwd", 64): _c("128x64w8s3", "64x64w4s3"),
    (80, "16", "light", "fwd", 128): _c("128x64w8s2", "64x64w8s2"),
    (80, "16", "light", "fwd", 256): _c("64x32w4s2"),
    (80, "16", "light", "dkdv", 64): _c("64x32w8s2"),
    (80, "16", "light", "dkdv", 128): _c("32x64w8s2"),
    (80, "16", "light", "dkdv", 256): _c("32x64w8s1"),
    (80, "16", "light", "dq", 64): _c("64x64w4s2"),
    (80, "16", "light", "dq", 128): _c("64x64w8s2"),
    (80, "16", "light", "dq", 256): _c("32x32w8s1"),
    (80, "16", "heavy", "fwd", 64): _c("32x32w4s2r232"),
    (80, "16", "heavy", "fwd", 128): _c("32x32w4s2"),
    (80, "16", "heavy", "fwd", 256): _c("32x32w8s1"),
    (80, "16", "heavy", "dkdv", 64): _c("16x32w4s2"),
    (80, "16", "heavy", "dkdv", 128): _c("16x32w8s2"),
    (80, "16", "heavy", "dkdv", 256): _c("16x32w8s1"),
    (80, "16", "heavy", "dq", 64): _c("16x32w4s2"),
    (80, "16", "heavy", "dq", 128): _c("16x32w8s2"),
    (80, "16", "heavy", "dq", 256): _c("16x32w8s1"),
}
# float32: TF32 dots take the 16-bit tiles at half the stages (4-byte tiles); IEEE dots (FMA) small tiles.
for (_arch, _cls, _weight, _kernel, _dim), _cfgs in list(_TABLE.items()):
    _TABLE[(_arch, "tf32", _weight, _kernel, _dim)] = [
        Config(c.block_m, c.block_n, c.num_warps, max(1, c.num_stages - 1)) for c in _cfgs]
    _fp32 = {"fwd": "32x32w4s2", "dkdv": "16x32w4s2", "dq": "16x32w4s2"}[_kernel] if _dim <= 64 else \
        {"fwd": "32x32w8s1", "dkdv": "16x32w8s1", "dq": "16x32w8s1"}[_kernel]
    _TABLE[(_arch, "fp32", _weight, _kernel, _dim)] = _c(_fp32)
del _arch, _cls, _weight, _kernel, _dim, _cfgs, _fp32
# The derived float32 entries where the compile gate (triton 3.7, its ptxas 12.8) found spills: smaller
# tiles, or (rNNN) the next register budget up where ptxas spilled to reach a higher occupancy.
_TABLE.update({
    (80, "tf32", "light", "fwd", 128): _c("64x64w8s1"),
    (80, "tf32", "light", "dq", 64): _c("32x64w4s1"),
    (80, "tf32", "heavy", "dq", 128): _c("16x16w8s1"),
    (90, "tf32", "light", "fwd", 64): _c("128x64w8s2", "64x64w4s2"),
    (90, "tf32", "light", "fwd", 128): _c("128x64w8s2", "64x64w8s1", "128x64w8s1"),
    (90, "tf32", "heavy", "fwd", 128): _c("32x32w8s1"),
    (90, "tf32", "light", "dkdv", 64): _c("32x64w8s1"),
    (90, "tf32", "light", "dq", 128): _c("32x64w8s1"),
    (90, "tf32", "heavy", "dq", 128): _c("16x16w8s1"),
    (80, "fp32", "heavy", "fwd", 64): _c("16x32w4s2"),
    (80, "fp32", "light", "fwd", 128): _c("32x32w8s1r255"),
    (80, "fp32", "light", "dkdv", 64): _c("16x32w4s2r255"),
    (80, "fp32", "heavy", "fwd", 128): _c("16x32w8s1"),
    (80, "fp32", "heavy", "dkdv", 64): _c("16x32w4s2r255"),
    (80, "fp32", "heavy", "dq", 64): _c("16x16w4s2r255"),
    (80, "fp32", "light", "dq", 128): _c("16x32w8s1r168"),
    (80, "fp32", "heavy", "dq", 128): _c("16x32w8s1r232"),
    (90, "fp32", "light", "dkdv", 128): _c("16x32w8s1r200"),
    (90, "fp32", "heavy", "dkdv", 128): _c("16x16w4s1"),
    (90, "fp32", "heavy", "fwd", 64): _c("32x32w8s2"),
    (90, "fp32", "light", "dkdv", 64): _c("16x32w8s2r255"),
    (90, "fp32", "heavy", "dkdv", 64): _c("16x32w8s2r255"),
    (90, "fp32", "heavy", "dq", 128): _c("16x32w8s1r255"),
})
# Head dims that are not a multiple of 16 (e.g. 72): Triton cannot prove their rows 16-byte aligned, so it
# loads and addresses the tiles element by element, and the 128 tiles below spill; these entries replace
# the table's for them (others keep theirs).
_UNALIGNED = {
    (80, "16", "light", "fwd", 128): _c("64x32w8s2", "32x64w8s2"),
    (80, "16", "light", "dq", 128): _c("32x64w8s2"),
    (90, "16", "light", "fwd", 128): _c("128x64w8s3"),
    (90, "16", "light", "dq", 128): _c("32x64w8s2"),
}


def _dtype_class(dtype: str) -> str:
    return "16" if ELEMENT_BYTES[dtype] == 2 else dtype


def weight(mod: str, dropout: bool) -> str:
    """The table's weight class of a call: light for masked_sdpa without dropout, else heavy."""
    return "light" if mod == "masked_sdpa" and not dropout else "heavy"


# Per-element bytes of the [BLOCK_M, BLOCK_N] scratch each modifier's score needs on top of the tiles: the relpos
# table gather converts its 64-bit addresses between layouts, decay and the masks less.
_MOD_SCRATCH = {"masked_sdpa": 2, "relpos_attention": 8, "decay_attention": 4}


def smem_estimate(kernel: str, config: Config, dtype: str, head_dim: int, head_dim_v: int, arch: int = 80,
                  mod: str = "masked_sdpa") -> int:
    """Static upper estimate of a launch's shared memory (bytes), what ``candidates`` prunes by.

    The tiles the loop streams, one buffer per stage (the forward and dQ: K and V; dK/dV: Q and dO, twice where
    they feed both operands of wgmma (sm_90) or of 32-bit dots); the tiles loaded once and staged for the dots
    (dQ: K once more there too); the modifier's [BLOCK_M, BLOCK_N] scratch; 1 KB for the reductions. Fitted to
    the compiled figures of triton 3.7 (``make triton-check`` prints both and fails where the compiled one is
    larger): an upper bound, by about 1.3x at the large tiles."""
    e = ELEMENT_BYTES[dtype]
    bm, bn, stages = config.block_m, config.block_n, max(config.num_stages, 1)
    dims = head_dim + head_dim_v
    twice = arch >= 90 or e == 4
    if kernel == "fwd":
        elements = stages * bn * dims + bm * head_dim
    elif kernel == "dkdv":
        elements = stages * bm * dims * (2 if twice else 1) + bn * dims
    else:
        elements = stages * bn * dims + bm * dims + (bn * head_dim if twice else 0)
    return e * elements + _MOD_SCRATCH[mod] * bm * bn + 1024


def candidates(kernel: str, arch: int, dtype: str, head_dim: int, head_dim_v: int, mod: str = "masked_sdpa",
               dropout: bool = False, aligned: bool = True):
    """The configurations of ``kernel`` that may run on ``arch`` for these operands, the default first:
    the table's entries whose shared-memory estimate fits the arch (at least one, shrunk if need be).
    head_dim / head_dim_v: the padded (power of two) head dims; aligned: whether the actual ones are
    multiples of 16 (``is_aligned``)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}")
    if interpreting():
        return [INTERPRETER_CONFIG]
    key = (_table_arch(arch), _dtype_class(dtype), weight(mod, dropout), kernel, _dim_bucket(max(head_dim, head_dim_v)))
    table = _TABLE[key] if aligned else _UNALIGNED.get(key, _TABLE[key])
    limit = smem_limit(arch)
    def estimate(c):
        return smem_estimate(kernel, c, dtype, head_dim, head_dim_v, arch, mod)

    fits = [c for c in table if estimate(c) <= limit]
    if not fits:  # e.g. an sm_86 / sm_89 part (99 KB): shrink the smallest entry until it fits
        c = min(table, key=estimate)
        while estimate(c) > limit and (c.num_stages > 1 or c.block_n > 16):
            c = Config(c.block_m, c.block_n, c.num_warps, c.num_stages - 1) if c.num_stages > 1 else \
                Config(min(c.block_m, c.block_n // 2), c.block_n // 2, c.num_warps, c.num_stages)
        fits = [c]
    return fits


def redo_config(head_dim: int, head_dim_v: int) -> Config:
    """The redo pass's configuration (any kernel, any arch; launch.plan(..., redo_pass=True)): BLOCK_M rows
    (dK/dV: BLOCK_N keys) a program, each computed again one at a time against BLOCK_N keys (BLOCK_M rows)
    a step in float32 registers, so the tiles shrink with the head dim."""
    if interpreting():
        return INTERPRETER_CONFIG
    # Without a budget ptxas spilled 4-12 B in a tenth of these kernels to reach an occupancy step (56-168
    # registers). With 255 it takes more registers (32-245 become 56-255), which costs little here: on finite
    # inputs the pass's programs read their flags and exit, and a flagged row is the rare, slow case anyway.
    return Config(16, 32 if max(head_dim, head_dim_v) <= 128 else 16, 4, 1, maxnreg=255)


def is_aligned(*head_dims: int) -> bool:
    """Whether every head dim is a multiple of 16 (the table's own entries), else ``_UNALIGNED``'s."""
    return all(d % 16 == 0 for d in head_dims)


def autotune_enabled() -> bool:
    """TEMPATTN_TRITON_AUTOTUNE=0 pins the forward to its default config (bitwise the same run to run)."""
    return os.environ.get("TEMPATTN_TRITON_AUTOTUNE", "1") != "0"


def all_forward_configs():
    """Every forward config of every table entry (the autotuner's list; pruned per call)."""
    if interpreting():
        return [INTERPRETER_CONFIG]
    return sorted({c for table in (_TABLE, _UNALIGNED) for (_, _, _, kernel, _), cs in table.items() if kernel == "fwd"
                   for c in cs})


def tma_eligible(kernel: str, config: Config, dtype: str, aligned: bool) -> bool:
    """Whether ``kernel``'s loop reads its tiles by TMA on sm_90 with ``config`` (the launcher's rule; the
    tensors' strides must allow it too): 16-bit operands, head dims that are multiples of 16 (``aligned``),
    and tiles whose every dot fed by the loop's tiles is a wgmma, which reads them from shared memory where
    TMA put them: BLOCK_M a multiple of 64 with whole warp groups, for dK/dV (whose loop tiles q and dO are
    also the A operand of the BLOCK_M-row dots) BLOCK_N too.

    From the compile gate with TMA forced on every sm_90 16-bit specialisation (triton 3.7.1): the forward
    and dQ with such tiles keep their wgmma count and shared memory (+16 B of barriers), spill nothing and
    use -41 to +20 registers; dK/dV's 32-row loop tiles took up to 102 more registers (+60 to +102 at
    D=128, spilling 448 B at D=256), dQ's 16-row tiles spilled 8-28 B, and D=72 (a 128-wide block over 72
    columns) 140 B."""
    wgmma_tiles = config.block_m % 64 == 0 and config.num_warps % 4 == 0
    if kernel == "dkdv":
        wgmma_tiles = wgmma_tiles and config.block_n % 64 == 0
    return dtype in ("fp16", "bf16") and aligned and wgmma_tiles
