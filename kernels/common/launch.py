"""Host side of the Triton core: configurations by arch, argument packing, grids and the fixed-order reductions.

Every launch goes through ``plan(kernel, ...)``, which returns the kernel, its positional arguments
and its keyword arguments (constexprs, num_warps, num_stages) for one configuration; the compile gate
(kernels/tools/triton_check.py) calls the same function with CPU stand-in tensors and an explicit
arch, so that it compiles exactly what the launcher would run.
"""
import math
import os
from dataclasses import dataclass

import torch
import triton

try:  # host-side tensor descriptors, for the loops' TMA copies on sm_90 (see use_tma)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # triton < 3.4
    TensorDescriptor = None

from . import configs as C
from .core import attention_bwd_dkdv_kernel, attention_bwd_dq_kernel, attention_fwd_kernel, attention_row_norm_kernel
from .score_mods import MOD_DECAY, MOD_NONE, MOD_RELPOS


@dataclass(frozen=True)
class Modifier:
    """A score modifier as the host sees it (the kernel side is in score_mods.py).

    code: the kernels' MOD constexpr. partials: how many (B, H, cdiv(Tq, BLOCK_M), width) float32
    gradient partials its dQ pass writes (width: mod_a.shape[1]), one row per query tile; zeroed:
    whether they must start at zero (written sparsely) rather than being written in full.
    """
    code: int
    partials: int
    zeroed: bool


# The score modifier of each operator, by the name its host launcher passes as ``mod``. ``mod_a`` /
# ``mod_b`` are the modifier's parameters: relpos rel_bias (H, R) / None; decay log_gamma (H, S) /
# log_softmax(alpha_logits) (H, S); masked_sdpa None / None.
MODIFIERS = {
    "masked_sdpa": Modifier(MOD_NONE.value, partials=0, zeroed=False),
    "relpos_attention": Modifier(MOD_RELPOS.value, partials=1, zeroed=True),   # band (B, H, nT, R)
    "decay_attention": Modifier(MOD_DECAY.value, partials=2, zeroed=False),    # d log_gamma, d log a (B, H, nT, S)
}
KERNEL_FNS = {"fwd": attention_fwd_kernel, "dkdv": attention_bwd_dkdv_kernel, "dq": attention_bwd_dq_kernel}


def padded(n: int) -> int:
    """The kernels' HEAD_DIM for a head dim n."""
    return max(16, triton.next_power_of_2(n))


def device_arch(device) -> int:
    """major * 10 + minor of a CUDA device (what the configurations are chosen by); 80 under the interpreter."""
    if C.interpreting() or torch.device(device).type != "cuda":
        return 80
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


def dtype_name(dtype: torch.dtype, tf32: bool = None) -> str:
    """configs' name of an operand dtype: fp16, bf16, fp32 (IEEE dots) or tf32 (float32 with TF32 dots)."""
    if dtype == torch.float16:
        return "fp16"
    if dtype == torch.bfloat16:
        return "bf16"
    if tf32 is None:
        tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "fp32"


def _bucket(n: int) -> int:
    """The autotuner's length key: the next power of two, 16 to 65536."""
    return min(max(16, triton.next_power_of_2(n)), 65536)


def _common(q, k, v, *, mod, key_valid, key_bias, mod_a, mod_b, times, causal, window, eps, dropout_p, seed, scale,
            precision):
    """(modifier, tensor pointers, runtime scalars, constexprs without block sizes) shared by the three kernels."""
    modifier = MODIFIERS[mod]
    B, H, Tq, D = q.shape
    Tk, Dv = k.shape[2], v.shape[3]
    dummy = torch.empty(1, device=q.device, dtype=torch.float32)
    S = mod_a.shape[1] if modifier.code == MOD_DECAY.value else 1
    R = mod_a.shape[1] if modifier.code == MOD_RELPOS.value else 1
    pointers = [key_valid.view(torch.uint8) if key_valid is not None else dummy,
                key_bias if key_bias is not None else dummy,
                mod_a if mod_a is not None else dummy, mod_b if mod_b is not None else dummy,
                times if times is not None else dummy]
    threshold = min(int(dropout_p * 4294967296.0), 0xFFFFFFFF)
    scalars = [H, Tq, Tk, D, Dv, R, max(window, 0), scale, math.log(max(eps, 1e-300)), seed,
               threshold, 1.0 / (1.0 - dropout_p)]
    constexprs = dict(MOD=modifier.code, S=S, CAUSAL=causal, WINDOWED=window >= 0, HAS_VALID=key_valid is not None,
                      HAS_BIAS=key_bias is not None, HAS_TIMES=times is not None, HAS_EPS=eps > 0,
                      DROPOUT=dropout_p > 0, PRECISION="tf32" if precision == "tf32" else "ieee",
                      HEAD_DIM=padded(D), HEAD_DIM_V=padded(Dv))
    return modifier, pointers, scalars, constexprs


TMA_ENV = "TEMPATTN_TRITON_TMA"
TMA_MIN_TRITON = (3, 6)
# Whether this triton has the descriptors' kernel side (read once: use_tma runs at every launch).
TRITON_HAS_TMA = TensorDescriptor is not None and \
    tuple(int(part) for part in triton.__version__.split(".")[:2]) >= TMA_MIN_TRITON


def tma_mode() -> str:
    """``TEMPATTN_TRITON_TMA``: unset or empty "auto" (TMA where ``configs.tma_eligible`` says so, on sm_90 and
    later, never under the interpreter); "0" "off"; "1" "on" (wherever the tensors allow it, whatever the
    configuration and dtype, under the interpreter too: how the tests run the TMA path on a CPU)."""
    value = os.environ.get(TMA_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{TMA_ENV} must be unset, 0 or 1, got {value!r}; unset it to let the launcher choose")
    return {"": "auto", "0": "off", "1": "on"}[value]


def tma_fits(t: torch.Tensor) -> bool:
    """Whether TMA can read the (B, H, T, D) tensor ``t`` (a descriptor's rules): a unit last stride, a
    16-byte aligned base and 16-byte multiples for the other strides, none of them 0 (an expanded dim)."""
    size = t.element_size()
    return t.stride(3) == 1 and t.data_ptr() % 16 == 0 and all(s > 0 and s * size % 16 == 0 for s in t.stride()[:3])


def use_tma(kernel: str, config: C.Config, arch: int, precision: str, aligned: bool, tensors) -> bool:
    """Whether ``kernel``'s loop reads its tiles of ``tensors`` by TMA (tensor descriptors) in this launch."""
    mode = tma_mode()
    if mode == "off" or not TRITON_HAS_TMA:
        return False
    if mode == "on":
        wanted = C.interpreting() or arch >= 90
    else:
        wanted = not C.interpreting() and arch >= 90 and C.tma_eligible(kernel, config, precision, aligned)
    return wanted and all(tma_fits(t) for t in tensors)


def _loop_descriptors(tensors, rows: int, tma: bool):
    """The kernel's two descriptor arguments for the tiles of ``tensors`` ((B, H, T, D) each) that its loop reads,
    [1, 1, rows, padded D] blocks; without TMA the tensors themselves, unused by the kernel."""
    if not tma:
        return list(tensors)
    return [TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, padded(t.shape[3])]) for t in tensors]


def _reblock_loop_descriptors(nargs):
    """The forward autotuner's pre-hook: each candidate's BLOCK_N for the k / v descriptors' blocks."""
    for name, dim in (("K_DESC", "HEAD_DIM"), ("V_DESC", "HEAD_DIM_V")):
        if TensorDescriptor is not None and isinstance(nargs[name], TensorDescriptor):
            nargs[name].block_shape = [1, 1, nargs["BLOCK_N"], nargs[dim]]


def _strides(*tensors):
    return [s for t in tensors for s in t.stride()[:3]]


def _launch_kw(config: C.Config, constexprs: dict, **extra) -> dict:
    return dict(constexprs, BLOCK_M=config.block_m, BLOCK_N=config.block_n, **config.launch_options(), **extra)


def redo_flags(x: torch.Tensor) -> torch.Tensor:
    """The redo flags of a pass over the rows of ``x`` (B, H, T, D): (B, H, T) int8, each written by the pass."""
    return torch.empty(x.shape[:3], device=x.device, dtype=torch.int8)


def plan(kernel: str, config: C.Config, q, k, v, *, grad_out=None, delta=None, lse=None, norm=None, out=None,
         outputs=None, redo=None, redo_pass=False, arch=None, **kw):
    """(kernel fn, grid, positional args, keyword args) of one launch of ``kernel`` with ``config``.

    fwd: ``out``, ``lse`` are written; norm: ``norm`` (B, H, Tq, 2) is written from ``lse``; dkdv:
    ``outputs`` = (dk, dv, dkb or None); dq: ``outputs`` = (dq, partial_0 or None, partial_1 or None).
    fwd, dkdv and dq: ``redo`` (``redo_flags``) flags the rows (keys) whose result ended non-finite;
    ``redo_pass``: the launch after that one, which computes the flagged rows again (the exact pass;
    its config is ``configs.redo_config``).
    ``arch``: the target (default: q's device's); with it, whether the loop reads its tiles by TMA (``use_tma``;
    never in a redo pass, which has no such loop).
    ``kw``: the operator's arguments (see ``_common``)."""
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    _, pointers, scalars, constexprs = _common(q, k, v, **kw)
    if kernel != "norm":  # the row-norm prepass has no descriptor arguments
        arch = device_arch(q.device) if arch is None else arch
        loop_tensors, loop_rows = ((q, grad_out), config.block_m) if kernel == "dkdv" else ((k, v), config.block_n)
        tma = not redo_pass and use_tma(kernel, config, arch, kw["precision"], C.is_aligned(q.shape[3], v.shape[3]),
                                        loop_tensors)
        descriptors = _loop_descriptors(loop_tensors, loop_rows, tma)
    if kernel == "fwd":
        args = [q, k, v, out, lse, redo, *pointers, *descriptors, *_strides(q, k, v, out), *scalars, _bucket(Tq),
                _bucket(Tk)]
        grid = (triton.cdiv(Tq, config.block_m), B * H)
        return attention_fwd_kernel, grid, args, _launch_kw(config, constexprs, REDO_PASS=redo_pass, USE_TMA=tma)
    if kernel == "norm":  # the scalars and constexprs of the score, without v's and dropout's
        args = [q, k, lse, norm, *pointers, *_strides(q, k), *scalars[:4], *scalars[5:9]]
        kwargs = {name: value for name, value in _launch_kw(config, constexprs).items()
                  if name not in ("DROPOUT", "HEAD_DIM_V")}
        return attention_row_norm_kernel, (triton.cdiv(Tq, config.block_m), B * H), args, kwargs
    if kernel == "dkdv":
        dk, dv, dkb = outputs
        args = [q, k, v, grad_out, norm, delta, dk, dv, dkb if dkb is not None else delta, redo, *pointers,
                *descriptors, *_strides(q, k, v, grad_out), *scalars]
        grid = (triton.cdiv(Tk, config.block_n), B * H)
        return attention_bwd_dkdv_kernel, grid, args, _launch_kw(config, constexprs, REDO_PASS=redo_pass, USE_TMA=tma)
    dq, p0, p1 = outputs
    if constexprs["MOD"] == MOD_RELPOS.value and config.block_m > config.block_n:
        raise ValueError(f"relpos dQ needs BLOCK_M <= BLOCK_N, got {config}")
    s_pad = max(2, triton.next_power_of_2(constexprs["S"])) if constexprs["MOD"] == MOD_DECAY.value else 1
    args = [q, k, v, grad_out, norm, delta, dq, p0 if p0 is not None else delta, p1 if p1 is not None else delta,
            redo, *pointers, *descriptors, *_strides(q, k, v, grad_out), *scalars]
    grid = (triton.cdiv(Tq, config.block_m), B * H)
    return attention_bwd_dq_kernel, grid, args, dict(_launch_kw(config, constexprs, REDO_PASS=redo_pass, USE_TMA=tma),
                                                     S_PAD=s_pad)


def select(kernel: str, q, k, v, mod: str, dropout: bool, arch: int = None, precision: str = None):
    """The candidates (configs.candidates) of ``kernel`` for these operands on ``arch`` (default: q's device)."""
    arch = device_arch(q.device) if arch is None else arch
    precision = dtype_name(q.dtype) if precision is None else precision
    return C.candidates(kernel, arch, precision, padded(q.shape[3]), padded(v.shape[3]), mod, dropout,
                        C.is_aligned(q.shape[3], v.shape[3]))


# The forward's autotuner: every table config, pruned per call to the candidates of the call's arch,
# dtype and head dims (configs.candidates: shared-memory estimate within the arch's limit), and keyed
# on the length buckets, head dims, modifier, flags and (automatically) the operand dtypes. The actual
# head dims (D, DV) are in the key, not only the padded ones: 72 and 128 pad alike but prune to different
# lists (configs.is_aligned), and a winner cached for one must not be reused for the other.
_AUTOTUNE_KEY = ["TQ_BUCKET", "TK_BUCKET", "HEAD_DIM", "HEAD_DIM_V", "D", "DV", "MOD", "S", "CAUSAL", "WINDOWED",
                 "HAS_VALID", "HAS_BIAS", "HAS_TIMES", "DROPOUT", "PRECISION", "USE_TMA"]


def _triton_config(c: C.Config):
    return triton.Config(dict(BLOCK_M=c.block_m, BLOCK_N=c.block_n), **c.launch_options(),
                         pre_hook=_reblock_loop_descriptors)


def _prune_forward(configs, named_args, **kwargs):
    q, v = named_args["Q"], named_args["V"]
    mod = next(name for name, m in MODIFIERS.items() if m.code == kwargs["MOD"])
    precision = dtype_name(q.dtype, kwargs["PRECISION"] == "tf32")
    wanted = select("fwd", q, None, v, mod, kwargs["DROPOUT"], precision=precision)
    by_key = {C.Config(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, c.maxnreg or 0): c
              for c in configs}
    return [by_key[c] for c in wanted]


_forward_autotuned = triton.autotune(configs=[_triton_config(c) for c in C.all_forward_configs()], key=_AUTOTUNE_KEY,
                                     prune_configs_by={"early_config_prune": _prune_forward})(attention_fwd_kernel)


def _operands(kw, q):
    precision = kw.pop("precision", None) or dtype_name(q.dtype)
    return dict(kw, precision=precision)


def attention_forward(q, k, v, **kw):
    """out (B, H, Tq, Dv) in q's dtype and lse (B, H, Tq) float32."""
    B, H, Tq, _ = q.shape
    kw = _operands(kw, q)
    out = torch.empty((B, H, Tq, v.shape[3]), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, Tq), device=q.device, dtype=torch.float32)
    configs = select("fwd", q, k, v, kw["mod"], kw["dropout_p"] > 0, precision=kw["precision"])
    redo = redo_flags(q)
    if len(configs) == 1 or not C.autotune_enabled():
        _run("fwd", configs[0], q, k, v, out=out, lse=lse, redo=redo, **kw)
    else:
        _, _, args, kwargs = plan("fwd", configs[0], q, k, v, out=out, lse=lse, redo=redo, **kw)
        for name in ("BLOCK_M", "BLOCK_N", *configs[0].launch_options()):
            kwargs.pop(name)
        _forward_autotuned[lambda meta: (triton.cdiv(Tq, meta["BLOCK_M"]), B * H)](*args, **kwargs)
    _run_redo_pass("fwd", q, k, v, out=out, lse=lse, redo=redo, **kw)
    return out, lse


def _run(kernel: str, config: C.Config, q, k, v, **plan_kw):
    """One launch of ``plan(kernel, config, ...)``."""
    fn, grid, args, kwargs = plan(kernel, config, q, k, v, **plan_kw)
    fn[grid](*args, **kwargs)


def _run_redo_pass(kernel: str, q, k, v, **plan_kw):
    """The launch after ``kernel``'s: the rows (keys) it flagged computed again by the exact pass (on finite
    inputs each program reads its flags only)."""
    _run(kernel, C.redo_config(padded(q.shape[3]), padded(v.shape[3])), q, k, v, redo_pass=True, **plan_kw)


def attention_backward(grad_out, delta, lse, q, k, v, **kw):
    """(dq, dk, dv, d key_bias or None, partial_0 or None, partial_1 or None).

    The partials are the modifier's parameter gradients per query tile, reduced by the caller over
    dims (0, 2): relpos (band (B, H, nT, R), None); decay (d log_gamma, d log a), each (B, H, nT, S);
    masked_sdpa (None, None): nothing is allocated for a modifier without parameters.
    nT = cdiv(Tq, BLOCK_M) of the dQ kernel's configuration.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    kw = _operands(kw, q)
    modifier = MODIFIERS[kw["mod"]]
    dropout = kw["dropout_p"] > 0
    cfg_kv = select("dkdv", q, k, v, kw["mod"], dropout, precision=kw["precision"])[0]
    cfg_q = select("dq", q, k, v, kw["mod"], dropout, precision=kw["precision"])[0]
    dq = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    dk = torch.empty((B, H, Tk, D), device=q.device, dtype=k.dtype)
    dv = torch.empty((B, H, Tk, v.shape[3]), device=q.device, dtype=v.dtype)
    dkb = torch.empty((B, H, Tk), device=q.device, dtype=torch.float32) if kw["key_bias"] is not None else None
    alloc = torch.zeros if modifier.zeroed else torch.empty
    n_tiles = triton.cdiv(Tq, cfg_q.block_m)
    partials = [alloc((B, H, n_tiles, kw["mod_a"].shape[1]), device=q.device, dtype=torch.float32)
                for _ in range(modifier.partials)]
    partials += [None] * (2 - len(partials))
    delta = delta.float().contiguous()
    norm = torch.empty((B, H, Tq, 2), device=q.device, dtype=torch.float32)
    _run("norm", cfg_q, q, k, v, lse=lse, norm=norm, **kw)
    grads = dict(grad_out=grad_out, delta=delta, norm=norm, **kw)
    dkdv = dict(grads, outputs=(dk, dv, dkb), redo=redo_flags(k))
    _run("dkdv", cfg_kv, q, k, v, **dkdv)
    _run_redo_pass("dkdv", q, k, v, **dkdv)
    dq_pass = dict(grads, outputs=(dq, *partials), redo=redo_flags(q))
    _run("dq", cfg_q, q, k, v, **dq_pass)
    _run_redo_pass("dq", q, k, v, **dq_pass)
    return (dq, dk, dv, dkb, *partials)
