"""Backend selection: the one place that decides which implementation runs.

``backend`` is "auto", "reference", "cpu", "triton" or "cuda"; the environment
variable ``TEMPATTN_BACKEND`` overrides "auto". Auto picks "cuda" for CUDA tensors
when the extension was built with CUDA *and* the operator's CUDA kernels have passed
the GPU correctness suite on this GPU's architecture (``CUDA_VALIDATED``), else
"triton"; for CPU tensors "cpu" (the C++ kernels in ``tempattn._C``), else "reference"
with one warning. ``backend="cuda"`` can always be requested explicitly. An explicit
backend that cannot run raises ``RuntimeError`` saying why.
"""
import functools
import importlib
import importlib.util
import os
import warnings

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")
_CHOICES = ("auto",) + BACKENDS

# (operator, GPU architecture "sm_XY") -> date (ISO) on which the operator's CUDA extension kernels
# passed the GPU correctness suite (`make gpu-check`: the backend-parametrised suite on "cuda", the
# cross-backend comparison and compute-sanitizer) on a device of that architecture. Until a pair is
# listed, "auto" keeps choosing "triton" for that operator's CUDA tensors there. Add a pair only
# with the gpu-check log that shows it passing.
CUDA_VALIDATED = {}


def _probe_extension():
    """(loaded, has_cpu_kernels, has_cuda_kernels, reason), probed once at import.

    Probing at import keeps dispatch free of imports, so torch.compile traces it.
    """
    try:
        importlib.import_module("tempattn._C")
    except ImportError as exc:
        return (False, False, False,
                f"the C++ extension tempattn._C is not built ({exc}); run `pip install -e . --no-build-isolation`")
    ops = torch.ops.tempattn_C
    return True, hasattr(ops, "masked_sdpa_fwd"), bool(ops.cuda_built()), None


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


_EXTENSION = _probe_extension()
_HAS_TRITON = _module_exists("triton")
_HAS_TRITON_KERNELS = _module_exists("tempattn.kernels.common")


def extension_loaded() -> bool:
    """Whether tempattn._C imported (its ops are registered)."""
    return _EXTENSION[0]


def _cpu_reason():
    loaded, has_cpu, _, reason = _EXTENSION
    if not loaded:
        return reason
    return None if has_cpu else "tempattn._C was built without the fused CPU kernels"


def _cuda_reason():
    loaded, _, has_cuda, reason = _EXTENSION
    if not loaded:
        return reason
    if not has_cuda:
        return "tempattn._C was built without CUDA (no nvcc or a CPU-only torch, or TEMPATTN_SKIP_CUDA_BUILD=1)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def _triton_reason():
    if not _HAS_TRITON:
        return "triton is not installed: pip install 'tempattn[triton]'"
    if not _HAS_TRITON_KERNELS:
        return "the Triton kernels (tempattn.kernels) are not part of this build"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "no GPU is visible; Triton runs on CPU tensors only under TRITON_INTERPRET=1"
    return None


def _unavailable_reason(backend: str):
    """Why ``backend`` cannot run in this process, or None."""
    if backend == "reference":
        return None
    if backend == "cpu":
        return _cpu_reason()
    return _triton_reason() if backend == "triton" else _cuda_reason()


def _cuda_arch(device=None):
    """"sm_XY" of a visible CUDA device (the current one by default), or None without one."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def cuda_validated(op: str, device=None) -> bool:
    """Whether ``op``'s CUDA kernels passed the GPU suite on this device's architecture (CUDA_VALIDATED)."""
    return (op, _cuda_arch(device)) in CUDA_VALIDATED


def _cuda_validation(status: dict) -> None:
    """The "cuda" entry's "validated" (operators validated on this GPU's architecture) and "note"."""
    entry = status["cuda"]
    arch = _cuda_arch()
    entry["validated"] = sorted(op for op, a in CUDA_VALIDATED if a == arch) if arch else []
    if not entry["available"]:
        entry["note"] = None
    elif entry["validated"]:
        entry["note"] = f"validated on {arch} for {', '.join(entry['validated'])}; auto uses it for those"
    else:
        entry["note"] = (f"built, not yet validated on this GPU ({arch}): auto uses triton for CUDA tensors; "
                         "backend='cuda' runs it on request")


def backends() -> dict:
    """Availability of each backend: ``{name: {"available": bool, "reason": str | None}}``.

    The ``"cuda"`` entry also has ``"validated"``: the operators whose CUDA kernels passed the GPU
    suite on this GPU's architecture (``CUDA_VALIDATED``; "auto" picks "cuda" for those only), and
    ``"note"``: e.g. "built, not yet validated on this GPU" (None when the backend is unavailable).

    The ``"cpu"`` entry also has ``"capability"``: the ISA level its kernels run at, ``"default"``,
    ``"avx2"`` or ``"avx512"`` (the widest this CPU supports, or ``$TEMPATTN_CPU_CAPABILITY`` if
    lower; chosen at the first call and kept), and ``"capabilities"``: the levels this build holds
    and this CPU can run, lowest first. Both are None when the extension is not loaded; an invalid
    ``TEMPATTN_CPU_CAPABILITY`` leaves ``"capability"`` None and says why in ``"capability_error"``.
    """
    status = {name: {"available": (r := _unavailable_reason(name)) is None, "reason": r} for name in BACKENDS}
    cpu = status["cpu"]
    cpu["capability"] = cpu["capabilities"] = None
    ops = torch.ops.tempattn_C if _EXTENSION[0] and _EXTENSION[1] else None
    if ops is not None and hasattr(ops, "cpu_capability"):  # (an extension built before the ISA levels lacks it)
        cpu["capabilities"] = list(ops.cpu_capabilities())
        try:
            cpu["capability"] = ops.cpu_capability()
        except (ValueError, RuntimeError) as exc:
            cpu["capability_error"] = str(exc).splitlines()[0]
    _cuda_validation(status)
    return status


def _device_reason(backend: str, device: torch.device):
    if backend == "cpu" and device.type != "cpu":
        return f"backend 'cpu' runs on CPU tensors, got tensors on {device}"
    if backend == "cuda" and device.type != "cuda":
        return f"backend 'cuda' runs on CUDA tensors, got tensors on {device}"
    if backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "backend 'triton' runs on CPU tensors only under TRITON_INTERPRET=1"
    return None


@functools.lru_cache(maxsize=1)
def _warn_reference_fallback(reason: str) -> None:
    warnings.warn(f"tempattn: using the O(T^2) reference backend on CPU because {reason}", RuntimeWarning, stacklevel=4)


def _auto(op: str, device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda" if _cuda_reason() is None and cuda_validated(op, device) else "triton"
    reason = _cpu_reason()
    if reason is None:
        return "cpu"
    _warn_reference_fallback(reason)
    return "reference"


# os.environ.get encodes its key on every call (~0.6 us, a tenth of a small operator call); the
# environment's live dict (which os.environ.__setitem__ / putenv keep current) read with keys
# encoded once gives the same answer. Falls back to os.environ.get where that dict is absent.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_BACKEND_VAR, _INTERPRET_VAR = (os.environ.encodekey(name) for name in ("TEMPATTN_BACKEND", "TRITON_INTERPRET"))


def _environ_value(encoded_name):
    if _ENVIRON_DATA is None:
        return os.environ.get(os.environ.decodevalue(encoded_name))
    return _ENVIRON_DATA.get(encoded_name)


# Successful resolutions by (operator, request, device type and index, TEMPATTN_BACKEND, TRITON_INTERPRET):
# availability is probed once per process, so only the environment can change the answer, and it is part
# of the key (the operator and device too: "auto" on CUDA depends on CUDA_VALIDATED for that pair).
_RESOLVED = {}


def resolve(op: str, backend: str, device_type: str, tensor: torch.Tensor) -> str:
    """The concrete backend that runs ``op`` on ``tensor``'s device (of type ``device_type``); raises if
    it cannot. The answer is cached per operator, backend, device and environment."""
    if not isinstance(backend, str):
        return _resolve(op, backend, tensor.device)  # raises the ValueError (and keeps unhashables out of the key)
    # The op: "auto" picks cuda per operator (CUDA_VALIDATED); a CUDA device's index: its architecture.
    index = tensor.device.index if device_type == "cuda" else None
    key = (op, backend, device_type, index, _environ_value(_BACKEND_VAR), _environ_value(_INTERPRET_VAR))
    chosen = _RESOLVED.get(key)
    if chosen is None:
        chosen = _RESOLVED[key] = _resolve(op, backend, tensor.device)
    return chosen


def _resolve(op: str, backend: str, device: torch.device) -> str:
    if backend not in _CHOICES or not isinstance(backend, str):
        raise ValueError(f"{op}: `backend` must be one of {_CHOICES}, got {backend!r}; hint: use 'auto'")
    if backend == "auto":
        backend = os.environ.get("TEMPATTN_BACKEND", "auto") or "auto"
        if backend not in _CHOICES:
            raise ValueError(f"{op}: TEMPATTN_BACKEND must be one of {_CHOICES}, got {backend!r}; hint: unset it")
        if backend == "auto":
            backend = _auto(op, device)
    reason = _unavailable_reason(backend) or _device_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"{op}: backend {backend!r} cannot run: {reason}")
    return backend
