"""The Triton compile gate (`make triton-check`): compiles every kernel specialisation the launcher can select, for real
GPU targets, without a GPU, and checks its static resources.

    python tools/triton_check.py [--arch 80,90] [--jobs 2] [--cache-dir DIR] [--out DIR] [--no-cache]
                                 [--filter REGEX] [--list]

How: each specialisation goes through the launcher's own ``plan()`` (kernels/common/launch.py) with CPU stand-in
tensors and the configuration that ``configs.candidates`` selects for the arch passed in, then through Triton's own
argument binding and specialisation, and ``triton.compile(..., target=GPUTarget("cuda", 80 | 90, 32))``, which runs
the ``ptxas`` that ships with triton (-v). So it compiles what a launch on that arch would, down to the cubin.

What it compiles (``specs()``, ~300 specialisations): for sm_80 and sm_90 and each kernel (forward, dK/dV, dQ), in
fp16, bf16 and fp32 (IEEE dots) at head dims 16, 32, 64, 128, 256 and 72 (not a power of two: padded to 128, rows
not 16-element aligned, so Triton's unaligned variant), the heaviest case of each of the launcher's two
configuration classes: masked_sdpa causal + key mask + key bias ("mask", the light configs) and decay_attention
with every flag on (window, key mask, key bias, dropout, timestamps, eps, three scales: "all", the heavy configs);
at head dims 64 and 128 also the plain masked_sdpa (every flag off), masked_sdpa with every flag (dropout
included) and relpos_attention with every flag (window, key mask, key bias, dropout; fp16 and bf16); float32 with
TF32 dots. Every forward specialisation is compiled with each of its autotune candidates (the pruned list), the
backward ones with their single configuration, and each kernel's redo pass (the same kernel with ``REDO_PASS``,
which recomputes the rows that met a non-finite value; one configuration, ``configs.redo_config``) once.
On sm_90, where the launcher's loops read their tiles by TMA (``launch.use_tma``), ``plan()`` passes the same
tensor descriptors here, so those specialisations compile with TMA (the table's ``tma`` column); the choice
follows ``TEMPATTN_TRITON_TMA``, which is part of the cache key.

It fails (exit 1) when a specialisation does not compile; when its shared memory exceeds the arch's opt-in limit per
block (sm_80 166,912 B, sm_90 232,448 B) or the launcher's static estimate (``configs.smem_estimate``, which the
pruning trusts for archs the gate does not compile); when a 16-bit or TF32 specialisation has no tensor-core
instruction (mma.sync / wgmma in its PTX; the redo passes excepted, whose IEEE products are the point); or when a
head dim <= 128 specialisation spills (ptxas -v: any spill store or load, the redo passes included). ptxas picks
a register budget by occupancy and spills to meet it, from a few bytes at 64-168 registers up to kilobytes; the
configurations where it did so carry an explicit budget (``Config.maxnreg``, compiled and checked here as launched). It writes ``<out>/triton-check.{json,md}``
(default build/triton-check/): a summary per arch, then per specialisation the arch, registers, spill bytes, shared
memory (compiled and estimated), tensor-core instruction counts (mma / wgmma), compile seconds (wall and CPU).

What it proves: every specialisation in that list builds with this Triton and its ptxas for sm_80 and sm_90a; fits
the block's shared memory, so the launch cannot fail for lack of it; lowers its dots to tensor cores (wgmma on sm_90
where Triton chose it); keeps its state in registers at D <= 128; and the launcher's shared-memory estimate bounds
the compiled figure.

What it cannot prove: numerical correctness of the compiled code (the interpreter suite checks the kernels' logic,
not the compiler; `make gpu-check` runs them on a device); speed or occupancy (registers x warps against the SM's
register file is not checked); run-time failures beyond the static limits (driver / PTX JIT, launch limits, out of
memory, illegal addresses); other archs (sm_86 / sm_89 with 99 KB of shared memory, sm_100) beyond the estimate the
pruning applies to them; and the flag combinations between "plain" and "all" (each flag is compiled on and off,
and resources grow with the flags, but not every combination is compiled), other S, R and window values (runtime
values or loop bounds, not code), and other alignments than the two covered.

Results are cached per specialisation under --cache-dir (default ~/.cache/tempattn/triton-check), keyed on the kernel
sources (kernels/common/*.py), this file, the Triton version and the specialisation: a change to any of those
recompiles everything, a change elsewhere nothing. A cold run: 668 specialisations, about 1,050 CPU seconds with
triton 3.7.1, without line info (see ``_compile_group``; the JSON records wall and CPU seconds, and each
specialisation's seconds per compiler stage).
Each specialisation's front end (AST -> TTIR) runs once for both archs: the sm_90 compile parses the TTIR
that the sm_80 one generated, then runs its own TTIR passes. Specialisations with one Triton cache key are
compiled once (the table marks the others ``same_as``). Workers are spawned, not forked: this process has
run Triton's binder to compute those keys.
"""
import argparse
import concurrent.futures as futures
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import resource

import torch
import triton
from triton import knobs
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import ASTSource, get_cache_key, make_backend
from triton.runtime.jit import create_function_from_signature

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SOURCES = sorted((ROOT / "kernels" / "common").glob("*.py"))
HEAD_DIMS = (16, 32, 64, 128, 256)
ODD_HEAD_DIM = 72
ARCHS = (80, 90)
ROW_NORM = "norm"  # launch.plan's name of the backward's row-norm prepass (attention_row_norm_kernel)
REDO = "-redo"  # a kernel's redo pass (launch.plan(..., redo_pass=True)): e.g. "dq-redo"


@dataclass(frozen=True)
class Spec:
    kernel: str           # fwd, dkdv, dq
    op: str               # masked_sdpa, relpos_attention, decay_attention
    variant: str          # all (every flag of the op on) or plain (none)
    dtype: str            # fp16, bf16, fp32, tf32
    head_dim: int
    arch: int
    config: str           # BMxBNwWsS
    default: bool = True  # the config the launcher runs without autotuning

    @property
    def name(self):
        return f"{self.kernel}/{self.op}/{self.variant}/{self.dtype}/d{self.head_dim}/{self.config}"


@dataclass
class Result:
    spec: Spec
    ok: bool = False
    error: str = ""
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0
    shared_estimate: int = 0
    mma: int = 0
    wgmma: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's and its ptxas runs' CPU time: the compile's cost on an idle core
    cached: bool = False
    tma: bool = False  # its loop reads tiles by TMA (launch.use_tma: sm_90, 16-bit, wgmma tiles)
    kernel_hash: str = ""  # Triton's cache key of the compiled kernel
    same_as: str = ""  # compiled once with this specialisation, whose kernel is the same (same cache key)
    stages: dict = field(default_factory=dict)  # wall seconds per compiler stage: source (AST -> TTIR), ttir, ..., cubin
    failures: list = field(default_factory=list)


def _launch_module():
    """(configs, launch) of the checkout's kernels/, imported as a package of its own: the gate needs torch
    and triton only, not a build of tempattn (kernels/ uses relative imports only)."""
    name = "tempattn_gate_kernels"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.common.configs"), importlib.import_module(f"{name}.common.launch")


def specs(archs=ARCHS):
    """The specialisations the gate compiles (see the module docstring), every forward one with each of its
    autotune candidates, the backward ones with their single configuration.

    Variants: ``mask`` masked_sdpa causal + key mask + key bias (the light configs' heaviest case),
    ``plain`` masked_sdpa with no flag, ``all`` an operator with every flag on, dropout included (the
    heavy configs)."""
    C, _ = _launch_module()
    out = []

    def add(kernel, op, variant, dtype, d, arch):
        hd = max(16, 1 << (d - 1).bit_length())
        cands = C.candidates(kernel, arch, dtype, hd, hd, op, dropout=variant == "all", aligned=C.is_aligned(d))
        for i, c in enumerate(cands):
            out.append(Spec(kernel, op, variant, dtype, d, arch, str(c), default=i == 0))
            if kernel == "dq":  # the backward's row-norm prepass is launched with the dQ configuration
                out.append(Spec(ROW_NORM, op, variant, dtype, d, arch, str(c), default=i == 0))
        out.append(Spec(kernel + REDO, op, variant, dtype, d, arch, str(C.redo_config(hd, hd))))

    for arch in archs:
        for kernel in C.KERNELS:
            for dtype in ("fp16", "bf16", "fp32"):
                for d in HEAD_DIMS + (ODD_HEAD_DIM,):
                    add(kernel, "masked_sdpa", "mask", dtype, d, arch)      # the light configs' heaviest case
                    if d != ODD_HEAD_DIM:
                        add(kernel, "decay_attention", "all", dtype, d, arch)  # the heavy configs' heaviest case
            for d in (64, 128):
                add(kernel, "masked_sdpa", "plain", "fp16", d, arch)
                add(kernel, "masked_sdpa", "all", "fp16", d, arch)
                add(kernel, "relpos_attention", "all", "fp16", d, arch)
                add(kernel, "relpos_attention", "all", "bf16", d, arch)
            for d in (64, 128, 256):
                add(kernel, "masked_sdpa", "mask", "tf32", d, arch)
            add(kernel, "decay_attention", "all", "tf32", 128, arch)
    return out


def _operands(spec: Spec):
    """CPU stand-ins for the launcher: (q, k, v, operator kwargs)."""
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "tf32": torch.float32}[spec.dtype]
    odd = spec.head_dim == ODD_HEAD_DIM
    B, H, T, D = 2, 4, 200 if odd else 256, spec.head_dim
    q, k, v = (torch.zeros(B, H, T, D, dtype=dt) for _ in range(3))
    full = spec.variant == "all"
    masks = spec.variant in ("all", "mask")
    kw = dict(mod=spec.op, key_valid=torch.ones(B, T, dtype=torch.bool) if masks else None,
              key_bias=torch.zeros(B, H, T) if masks else None, mod_a=None, mod_b=None, times=None,
              causal=spec.op != "masked_sdpa" or masks, window=-1, eps=0.0, dropout_p=0.1 if full else 0.0,
              seed=(1 << 40) + 7 if full else 0, scale=D ** -0.5, precision=spec.dtype)
    if spec.op == "relpos_attention":
        kw.update(mod_a=torch.zeros(H, 64), window=63 if full else -1)
    if spec.op == "decay_attention":
        S = 3 if full else 1
        kw.update(mod_a=torch.zeros(H, S), mod_b=torch.zeros(H, S), times=torch.zeros(B, T) if full else None,
                  eps=1e-6 if full else 0.0, window=200 if full else -1)
    return q, k, v, kw


class _SharedFrontEnd(ASTSource):
    """A Triton source whose AST -> TTIR code generation runs once for all archs of a specialisation: the
    first compile writes the generated module (locations included) to ``ttir_path``, the others parse it back
    (``reuse``); each then runs its arch's own TTIR passes and the rest of the pipeline. Valid because the
    code generator reads no arch-dependent option but for fp8 dots (``supported_fp8_dtypes``,
    ``max_num_imprecise_acc_default``), which these kernels do not have."""
    ttir_path = None
    reuse = False

    def make_ir(self, target, options, codegen_fns, module_map, context):
        if self.reuse:
            module = ir.parse_mlir_module(self.ttir_path, context)
            module.context = context  # as Triton's IRSource does: the pipeline takes the context from the module
            return module
        module = super().make_ir(target, options, codegen_fns, module_map, context)
        Path(self.ttir_path).write_text(str(module))
        return module


def _launch(spec: Spec):
    """(kernel fn, positional args, keyword args, shared-memory estimate) of the launcher's ``plan()`` for the
    specialisation, with CPU stand-in tensors."""
    C, L = _launch_module()
    q, k, v, kw = _operands(spec)
    config = C.parse_config(spec.config)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    kernel = spec.kernel.removesuffix(REDO)
    extra = {}
    if kernel == "fwd":
        extra = dict(out=torch.empty_like(q), lse=torch.empty(B, H, Tq))
    elif kernel == ROW_NORM:
        extra = dict(lse=torch.zeros(B, H, Tq), norm=torch.empty(B, H, Tq, 2))
    else:
        grads = dict(grad_out=torch.zeros_like(q), delta=torch.zeros(B, H, Tq), norm=torch.zeros(B, H, Tq, 2))
        if kernel == "dkdv":
            extra = dict(grads, outputs=(torch.empty_like(k), torch.empty_like(v),
                                         torch.empty(B, H, Tk) if kw["key_bias"] is not None else None))
        else:
            n = triton.cdiv(Tq, config.block_m)
            width = kw["mod_a"].shape[1] if kw["mod_a"] is not None else 1
            parts = {"masked_sdpa": 0, "relpos_attention": 1, "decay_attention": 2}[spec.op]
            p = [torch.zeros(B, H, n, width) for _ in range(parts)] + [None] * (2 - parts)
            extra = dict(grads, outputs=(torch.empty_like(q), *p))
    if kernel != ROW_NORM:
        extra.update(redo=L.redo_flags(k if kernel == "dkdv" else q), redo_pass=spec.kernel.endswith(REDO))
    fn, _, args, kwargs = L.plan(kernel, config, q, k, v, arch=spec.arch, **extra, **kw)
    # the row-norm prepass stages a subset of what dQ does (q and K, no V): dQ's estimate bounds it
    estimated = "dq" if kernel == ROW_NORM else kernel
    estimate = C.smem_estimate(estimated, config, spec.dtype, L.padded(D), L.padded(v.shape[3]), spec.arch, spec.op)
    return fn, args, kwargs, estimate


def _source(spec: Spec):
    """(Triton source, compile options, target, shared-memory estimate, TMA) of the specialisation: the launch's
    arguments bound and specialised by Triton's own binder, as a launch on ``spec.arch`` would."""
    fn, args, kwargs, estimate = _launch(spec)
    target = GPUTarget("cuda", spec.arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return (_SharedFrontEnd(fn, signature, constexprs, attrs), options.__dict__, target, estimate,
            bool(kwargs.get("USE_TMA")))


def _compile_key(spec: Spec):
    """(front-end key, compile key): specialisations with the same front-end key generate the same TTIR (the
    source hash covers the function, constexprs, signature and alignment, not the arch); with the same
    compile key (Triton's cache key: front end, arch, options) they compile to the same kernel."""
    src, options, target, _, _ = _source(spec)
    backend = make_backend(target)
    return src.hash(), get_cache_key(src, backend, backend.parse_options(options), env_vars={})


def _compile_plan(pending):
    """(groups, duplicates): the specialisations to compile, grouped by front end (one list per Triton source,
    one specialisation per compile key), the slow ones first (wide heads, backward) so that the pool does not
    end on one long compile; and each specialisation whose compile key another one has -> that one."""
    compiled, groups, duplicates = {}, {}, {}
    for spec in pending:
        try:
            front_end, key = _compile_key(spec)
        except Exception:  # noqa: BLE001 - its compile fails the same way, and reports it
            front_end, key = spec, spec
        if key in compiled:
            duplicates[spec] = compiled[key]
        else:
            compiled[key] = spec
            groups.setdefault(front_end, []).append(spec)
    return sorted(groups.values(), key=lambda g: (-g[0].head_dim, g[0].kernel == "fwd", g[0].dtype != "fp32")), \
        duplicates


def _compile_group(group, line_info=False):
    """Compile specialisations that share one front end (the same kernel for several archs, in a worker):
    their Results, the AST -> TTIR code generation run once (again only if it failed).

    Without line info by default (a launch has it): the debug scopes in LLVM and ptxas's -lineinfo cost
    about a fifth of the compile and change no instruction, register or byte of shared memory
    (test_gate_line_info_changes_no_resource checks one kernel of each kind)."""
    ttir = tempfile.NamedTemporaryFile("w", suffix=".ttir", delete=False)
    ttir.close()
    knobs.compilation.disable_line_info = not line_info
    try:
        return [_compile(spec, ttir.name, reuse=os.path.getsize(ttir.name) > 0) for spec in group]
    finally:
        os.unlink(ttir.name)


def _compile(spec: Spec, ttir_path: str, reuse: bool):
    """Compile one specialisation: a Result with ptxas's and Triton's resource numbers. The TTIR that the
    front end generates is written to (``reuse``: read from) ``ttir_path``."""
    res = Result(spec)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        src, options, target, res.shared_estimate, res.tma = _source(spec)
        src.ttir_path, src.reuse = ttir_path, reuse
        log = io.StringIO()
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True  # ptxas -v runs (and reports) for every specialisation
        knobs.compilation.listener = _stage_recorder(res)
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=target, options=options)
        _read_ptxas(res, log.getvalue())
        res.shared = int(compiled.metadata.shared)
        res.kernel_hash = compiled.hash[:16]
        ptx = compiled.asm["ptx"]
        res.mma = len(re.findall(r"^\s*mma\.sync", ptx, re.M))
        res.wgmma = len(re.findall(r"^\s*wgmma\.mma_async", ptx, re.M))
        res.ok = True
    except Exception as e:  # noqa: BLE001 - every failure is a gate failure, reported with its message
        res.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
    res.seconds = time.perf_counter() - t0
    res.cpu_seconds = _cpu_seconds() - c0
    return res


def _read_ptxas(res: Result, log: str):
    """Registers, spills and stack from ptxas -v's log."""
    registers = [int(n) for n in re.findall(r"Used (\d+) registers", log)]
    if not registers:
        raise RuntimeError("no ptxas -v output")
    res.registers = max(registers)
    for st, ld in re.findall(r"Function properties for \S+\s+\d+ bytes stack frame, (\d+) bytes spill "
                             r"stores, (\d+) bytes spill loads", log):
        res.spill_stores += int(st)
        res.spill_loads += int(ld)
    res.stack = max(map(int, re.findall(r"(\d+) bytes stack frame", log)), default=0)


def _stage_recorder(res: Result):
    """A Triton compilation listener that keeps the compile's wall seconds per stage in ``res.stages``
    (source: the AST -> TTIR code generation; ttir ... cubin: the lowering stages, cubin being ptxas)."""
    def listener(*, times, cache_hit, **_):
        if not cache_hit:
            res.stages = {"source": times.ir_initialization / 1e6,
                          **{stage: us / 1e6 for stage, us in times.lowering_stages}}
    return listener


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _worker_init(triton_cache):
    os.environ["TRITON_CACHE_DIR"] = triton_cache  # Triton writes every stage there: a temporary directory


def _has_dots(spec: Spec) -> bool:
    """Whether the specialisation's products go to tensor cores: 16-bit or TF32 operands, but for the redo
    passes (IEEE float32 products by design, see kernels/common/core.py)."""
    return (spec.dtype in ("fp16", "bf16", "tf32")) and not spec.kernel.endswith(REDO)


def check(res: Result, C) -> list:
    s = res.spec
    fails = []
    if not res.ok:
        return [f"does not compile: {res.error}"]
    limit = C.smem_limit(s.arch)
    if res.shared > limit:
        fails.append(f"shared memory {res.shared} B > {limit} B (sm_{s.arch})")
    if res.shared > res.shared_estimate:
        fails.append(f"shared memory {res.shared} B > the launcher's estimate {res.shared_estimate} B")
    if _has_dots(s) and res.mma + res.wgmma == 0:
        fails.append("no tensor-core instruction (mma / wgmma)")
    if s.head_dim <= 128 and (res.spill_stores or res.spill_loads):
        fails.append(f"spills {res.spill_stores} B stores / {res.spill_loads} B loads at D={s.head_dim}")
    return fails


def triton_version() -> str:
    return f"triton {triton.__version__}"


def _source_hash():
    h = hashlib.sha256(triton.__version__.encode())
    for p in KERNEL_SOURCES:
        h.update(p.name.encode() + p.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def _key(spec: Spec, source_hash: str) -> str:
    return hashlib.sha256((source_hash + json.dumps(asdict(spec), sort_keys=True)).encode()).hexdigest()[:24]


def table(results, C) -> str:
    lines = ["| specialisation | arch | tma | regs | spills (B st/ld) | smem (B) | smem est. | mma | wgmma | "
             "compile s (cpu) | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        status = "ok" if not r.failures else "FAIL: " + "; ".join(r.failures)
        name = r.spec.name + ("" if r.spec.default else " (autotune)")
        lines.append(f"| {name} | sm_{r.spec.arch} | {'yes' if r.tma else ''} | {r.registers} | "
                     f"{r.spill_stores}/{r.spill_loads} | {r.shared} | {r.shared_estimate} | {r.mma} | {r.wgmma} | "
                     f"{r.seconds:.1f} ({r.cpu_seconds:.1f}){' cached' if r.cached else ''} | {status} |")
    return "\n".join(lines)


def summary(results, C) -> str:
    """Per arch: how many compiled, max registers, spills, max shared memory, tensor-core instruction counts."""
    out = []
    for arch in sorted({r.spec.arch for r in results}):
        rs = [r for r in results if r.spec.arch == arch and r.ok]
        if not rs:
            continue
        small = [r for r in rs if r.spec.head_dim <= 128]
        big = [r for r in rs if r.spec.head_dim > 128]
        top = max(rs, key=lambda r: r.shared)
        tc = [r for r in rs if _has_dots(r.spec)]
        mma = [r.mma + r.wgmma for r in tc]
        wg = sum(1 for r in tc if r.wgmma)
        spilling_big = [r for r in big if r.spill_stores or r.spill_loads]
        out.append(f"sm_{arch}: {len(rs)} compiled; max registers {max(r.registers for r in rs)}; "
                   f"spills at D<=128: {sum(1 for r in small if r.spill_stores or r.spill_loads)}, at D=256: "
                   f"{len(spilling_big)} (max {max((r.spill_stores for r in spilling_big), default=0)} B stores); "
                   f"max smem {top.shared} B of {C.smem_limit(arch)} ({top.spec.name}); "
                   f"tensor-core instructions per 16-bit/TF32 kernel {min(mma, default=0)}..{max(mma, default=0)}"
                   f" ({wg} of {len(tc)} with wgmma, {sum(r.tma for r in rs)} with TMA); "
                   f"compile cpu s total {sum(r.cpu_seconds for r in rs):.0f}, "
                   f"max {max(r.cpu_seconds for r in rs):.1f}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(map(str, ARCHS)), help="comma-separated compute capabilities")
    ap.add_argument("--jobs", type=int,
                    default=int(os.environ.get("TRITON_CHECK_JOBS", min(os.cpu_count() or 1, 2))))
    ap.add_argument("--cache-dir", default=os.environ.get("TRITON_CHECK_CACHE",
                                                          os.path.expanduser("~/.cache/tempattn/triton-check")))
    ap.add_argument("--no-cache", action="store_true", help="ignore and do not write cached results")
    ap.add_argument("--out", default=str(ROOT / "build" / "triton-check"))
    ap.add_argument("--filter", default="", help="only specialisations whose name (or sm_ARCH) matches")
    ap.add_argument("--list", action="store_true", help="list the specialisations and exit")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)

    C, L = _launch_module()
    todo = [s for s in specs(tuple(int(a) for a in args.arch.split(",")))
            if re.search(args.filter, f"{s.name} sm_{s.arch}")]
    if args.list:
        print("\n".join(f"sm_{s.arch} {s.name}" for s in todo))
        print(f"{len(todo)} specialisations")
        return 0
    t0 = time.perf_counter()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    source_hash = _source_hash() + L.tma_mode()  # TEMPATTN_TRITON_TMA changes what is launched
    results, pending = {}, []
    for s in todo:
        path = cache / f"{_key(s, source_hash)}.json"
        if not args.no_cache and path.exists():
            data = json.loads(path.read_text())
            results[s] = Result(**{**data, "spec": s, "cached": True})
        else:
            pending.append(s)
    print(f"triton-check: {len(todo)} specialisations, {len(todo) - len(pending)} cached, compiling {len(pending)} "
          f"with {args.jobs} jobs", flush=True)
    groups, duplicates = _compile_plan(pending)
    with tempfile.TemporaryDirectory(prefix="triton-check-") as triton_cache:
        # spawned workers: this process has run Triton's binder (threads, locks), which a fork would copy mid-state
        with futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_worker_init, initargs=(triton_cache,)) as pool:
            jobs = [pool.submit(_compile_group, group) for group in groups]
            done = 0
            for job in futures.as_completed(jobs):
                for r in job.result():
                    done += 1
                    results[r.spec] = r
                    if not r.ok or done % 25 == 0:
                        print(f"  [{done}/{len(pending)}] {time.perf_counter() - t0:.0f}s  sm_{r.spec.arch} "
                              f"{r.spec.name}{'' if r.ok else '  ERROR ' + r.error}", flush=True)
    for spec, same in duplicates.items():
        results[spec] = replace(results[same], spec=spec, seconds=0.0, cpu_seconds=0.0, stages={},
                                same_as=f"sm_{same.arch} {same.name}")
    if not args.no_cache:
        for spec in pending:
            if results[spec].ok:
                data = asdict(results[spec])
                data.pop("spec")
                data.pop("cached")
                (cache / f"{_key(spec, source_hash)}.json").write_text(json.dumps(data))
    ordered = [results[s] for s in todo]
    for r in ordered:
        r.failures = check(r, C)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t0
    cpu = sum(r.cpu_seconds for r in ordered if not r.cached)
    (out / "triton-check.json").write_text(json.dumps(
        dict(wall_seconds=wall, cpu_seconds=cpu, jobs=args.jobs, compiled=len(pending), cached=len(todo) - len(pending),
             failed=sum(1 for r in ordered if r.failures), summary=summary(ordered, C).splitlines(),
             results=[dict(asdict(r), name=r.spec.name) for r in ordered]), indent=1))
    report = table(ordered, C)
    (out / "triton-check.md").write_text(f"# triton-check ({triton_version()})\n\n" + summary(ordered, C) + "\n\n"
                                         + report + "\n")
    failed = [r for r in ordered if r.failures]
    for r in failed:
        print(f"FAIL sm_{r.spec.arch} {r.spec.name}: {'; '.join(r.failures)}")
    print(summary(ordered, C))
    print(f"triton-check: {len(ordered) - len(failed)}/{len(ordered)} ok in {wall:.0f}s wall, {cpu:.0f} cpu s "
          f"({len(pending)} compiled, {len(todo) - len(pending)} cached); table: {out / 'triton-check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
