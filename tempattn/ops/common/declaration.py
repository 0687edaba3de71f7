"""One declaration per operator; the custom ops, their fakes and autograd, and the relay to each backend
are generated from it.

An attention operator's arguments are always laid out as

    q, k, v, *op_tensors, key_valid, key_bias, *op_config, dropout_p, seed, scale, backend

where ``op_tensors`` and ``op_config`` are what the operator adds (``rel_bias``; ``window``). The
declaration names them, says which tensors are differentiable and gives the schema type of each
config value. From that :func:`declare_attention_op` generates

- ``tempattn::<name>_fwd`` / ``_bwd``: ``torch.library`` custom ops with fakes and registered
  autograd, which ``torch.compile`` and ``opcheck`` see;
- the relay: per backend, the forward ``kernel(*tensors, *config) -> (out, lse)`` and the backward
  ``kernel(grad_out, out, grad_lse, lse, *tensors, *config) -> [grads of the present differentiable
  tensors]`` (``grad_lse`` None when lse was unused; each kernel forms its rowsum(dO * O) - dlse
  itself, the CPU one inside its loop over the dO rows); the C++ / CUDA ones are ``torch.ops.tempattn_C.<name>_fwd`` / ``_bwd``, the Triton ones come
  from the declaration, the reference backward is autograd through the reference forward;
- an eager fast path: outside ``torch.compile`` and tensor-subclass tracing, the call goes straight
  to the relay (an ``autograd.Function`` when a gradient is needed), skipping the custom-op layer
  whose Python dispatch costs more than a small kernel.

``None`` is passed through as ``None`` (schema ``SymInt?``): a kernel converts it to its own sentinel
at its launch boundary, nowhere else.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import fastpath
from .autograd import fake_outputs, reference_backward

# The arguments every operator shares, around its own (see the module docstring).
_QKV = ("q", "k", "v")
_KEYS = (("key_valid", "Tensor?", False), ("key_bias", "Tensor?", True))
_TAIL_CONFIG = (("dropout_p", "float"), ("seed", "SymInt"), ("scale", "float"))


@dataclass(frozen=True)
class TensorArg:
    """An operator tensor: ``kind`` is ``"Tensor"`` or ``"Tensor?"``."""
    name: str
    kind: str = "Tensor"
    differentiable: bool = True


@dataclass(frozen=True)
class ConfigArg:
    """A non-tensor argument: ``kind`` is its schema type (``"SymInt?"``, ``"float"``, ``"bool"``); ints are
    SymInt so that a value traced as a symbol (a seed drawn while compiling) passes."""
    name: str
    kind: str


@dataclass(frozen=True)
class Kernels:
    """A backend's forward and backward (signatures in the module docstring)."""
    forward: Callable
    backward: Callable


@dataclass
class AttentionOp:
    """The declaration of one operator, and (after :func:`declare_attention_op`) its generated parts."""
    name: str
    op_tensors: Tuple[TensorArg, ...]
    op_config: Tuple[ConfigArg, ...]
    reference: Callable                       # reference(*tensors, *config) -> (out, lse)
    triton: Optional[Kernels] = None
    n_tensors: int = field(default=0, init=False)
    fwd_op: Callable = field(default=None, init=False)
    bwd_op: Callable = field(default=None, init=False)
    function: type = field(default=None, init=False)
    # The eager autograd.Function's apply from its C base: Function.apply's Python wrapper only adds
    # functorch handling, which the eager gate has already ruled out (about 1.5 us per call).
    apply_function: Callable = field(default=None, init=False)

    @property
    def tensor_specs(self) -> Tuple[Tuple[str, str, bool], ...]:
        """(name, schema type, differentiable) of every tensor, in call order."""
        return (tuple((n, "Tensor", True) for n in _QKV)
                + tuple((t.name, t.kind, t.differentiable) for t in self.op_tensors) + _KEYS)

    @property
    def config_specs(self) -> Tuple[Tuple[str, str], ...]:
        return tuple((c.name, c.kind) for c in self.op_config) + _TAIL_CONFIG

    @property
    def differentiable(self) -> Tuple[bool, ...]:
        return tuple(d for _, _, d in self.tensor_specs)

    def __call__(self, *args) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(*tensors, *config, backend) -> (out, lse)``: the custom op, or the eager fast path."""
        tensors = args[:self.n_tensors]
        mode = fastpath.TRACE if torch.compiler.is_compiling() else fastpath.C_OR_PY.eager_mode(*tensors)
        if mode == fastpath.EAGER_NO_GRAD:
            return relay_forward(self, tensors, args[self.n_tensors:-1], args[-1])
        if mode == fastpath.EAGER_GRAD:
            return self.apply_function(*args)
        return self.fwd_op(*args)

    def kernels(self, backend: str) -> Kernels:
        if backend in ("cpu", "cuda"):  # one tempattn_C op per direction; the dispatcher picks CPU or CUDA kernels
            return _EXTENSION_KERNELS[self.name]
        if backend == "triton" and self.triton is not None:
            return self.triton
        raise RuntimeError(f"{self.name}: backend {backend!r} has no kernel for this operator in this build")


def _eager(tensors: Sequence[Optional[torch.Tensor]]) -> bool:
    """Plain tensors and no tracing: the custom-op layer adds nothing there."""
    return not torch.compiler.is_compiling() and fastpath.C_OR_PY.eager_mode(*tensors) != fastpath.TRACE


def _is_empty(tensors) -> bool:
    """No query row (B, H or Tq is 0) or no key: nothing for a kernel to do."""
    return tensors[0].numel() == 0 or tensors[1].shape[2] == 0


def _empty_forward(tensors) -> Tuple[torch.Tensor, torch.Tensor]:
    q, v = tensors[0], tensors[2]
    out, lse = fake_outputs(q, v)
    return out.zero_(), lse.fill_(float("-inf"))


def relay_forward(op: AttentionOp, tensors, config, backend: str):
    if _is_empty(tensors):
        return _empty_forward(tensors)
    if backend == "reference":
        return op.reference(*tensors, *config)
    return op.kernels(backend).forward(*tensors, *config)


def _present_differentiable(op: AttentionOp, tensors) -> List[torch.Tensor]:
    return [t for t, d in zip(tensors, op.differentiable) if d and t is not None]


def relay_backward(op: AttentionOp, grad_out, grad_lse, out, lse, tensors, config, backend: str) -> List[torch.Tensor]:
    """Gradients of the present differentiable tensors, contiguous (as the fake promises)."""
    if _is_empty(tensors):
        return [torch.zeros_like(t, memory_format=torch.contiguous_format)
                for t in _present_differentiable(op, tensors)]
    if backend == "reference":
        return reference_backward(lambda *t: op.reference(*t, *config), tensors, op.differentiable, grad_out,
                                  grad_lse)
    grads = op.kernels(backend).backward(grad_out, out, grad_lse, lse, *tensors, *config)
    return [g.contiguous() for g in grads]


def _fake_gradients(op: AttentionOp, tensors) -> List[torch.Tensor]:
    return [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in _present_differentiable(op, tensors)]


def _schema(op: AttentionOp, prefix: str, returns: str) -> str:
    args = [f"{kind} {name}" for name, kind, _ in op.tensor_specs] + [f"{k} {n}" for n, k in op.config_specs]
    return f"({prefix}{', '.join(args)}, str backend) -> {returns}"


def _split(op: AttentionOp, args):
    """(tensors, config, backend) of a flat ``(*tensors, *config, backend)``."""
    return args[:op.n_tensors], args[op.n_tensors:-1], args[-1]


def _autograd_parts(op: AttentionOp):
    """setup_context and backward, shared by the custom op and the eager autograd.Function."""
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:op.n_tensors], *output)
        ctx.config = inputs[op.n_tensors:]

    def backward(ctx, grad_out, grad_lse):
        *tensors, out, lse = ctx.saved_tensors
        *config, backend = ctx.config
        if backend != "reference" and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            raise RuntimeError(f"{op.name}: backend {backend!r} has no double backward (create_graph=True); "
                               "hint: use backend='reference' for higher-order gradients")
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        if grad_lse is not None:
            grad_lse = grad_lse.contiguous()
        elif backend == "reference" or not _eager(tensors):
            grad_lse = torch.zeros_like(lse)  # else an unused lse (the usual case) costs no zeros to subtract
        if backend == "reference" or _eager(tensors):
            grads = relay_backward(op, grad_out, grad_lse, out, lse, tensors, config, backend)
        else:
            grads = op.bwd_op(grad_out, grad_lse, out, lse, *tensors, *ctx.config)
        grads = iter(grads)
        per_input = [next(grads) if d and t is not None else None for t, d in zip(tensors, op.differentiable)]
        return (*per_input, *([None] * len(ctx.config)))

    return setup_context, backward


def _eager_function(op: AttentionOp, setup_context, backward) -> type:
    """An autograd.Function running the relay directly, with the custom op's backward.

    Its forward takes ``ctx`` and calls setup_context itself: a separate ``setup_context`` staticmethod
    sends ``apply`` down a slower path (about 8 us more per call, as much as a small kernel).
    """
    def forward(ctx, *args):
        tensors, config, backend = _split(op, args)
        ctx.set_materialize_grads(False)  # the backward zero-fills what it needs, and skips an unused lse
        output = relay_forward(op, tensors, config, backend)
        setup_context(ctx, args, output)
        return output

    return type(f"{op.name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})


def _eager_backward_op(op: AttentionOp):
    """The backward custom op's body, also called directly by the eager path's backward."""
    def bwd(grad_out, grad_lse, out, lse, *args):
        tensors, config, backend = _split(op, args)
        return relay_backward(op, grad_out, grad_lse, out, lse, tensors, config, backend)
    return bwd


def declare_attention_op(op: AttentionOp) -> AttentionOp:
    """Generates the custom ops, fakes, autograd and the eager path of ``op`` (see the module docstring)."""
    op.n_tensors = len(op.tensor_specs)
    def fwd(*args):
        tensors, config, backend = _split(op, args)
        return relay_forward(op, tensors, config, backend)

    op.fwd_op = torch.library.custom_op(f"tempattn::{op.name}_fwd", fwd, mutates_args=(),
                                        schema=_schema(op, "", "(Tensor, Tensor)"))
    op.fwd_op.register_fake(lambda *args: fake_outputs(args[0], args[2]))
    bwd_body = _eager_backward_op(op)
    op.bwd_op = torch.library.custom_op(
        f"tempattn::{op.name}_bwd", bwd_body, mutates_args=(),
        schema=_schema(op, "Tensor grad_out, Tensor grad_lse, Tensor out, Tensor lse, ", "Tensor[]"))
    op.bwd_op.register_fake(lambda grad_out, grad_lse, out, lse, *args: _fake_gradients(op, _split(op, args)[0]))
    setup_context, backward = _autograd_parts(op)
    op.fwd_op.register_autograd(backward, setup_context=setup_context)
    op.function = _eager_function(op, setup_context, backward)
    op.apply_function = super(torch.autograd.Function, op.function).apply
    return op


class _ExtensionKernels(dict):
    """``torch.ops.tempattn_C.<name>_fwd`` / ``_bwd`` per operator, looked up on first use. The ops have a
    CPU kernel (csrc/cpu) and, in a CUDA build, a CUDA kernel (csrc/cuda): backends "cpu" and "cuda"."""

    def __missing__(self, name: str) -> Kernels:
        import tempattn._C  # noqa: F401  (registers the ops)
        ops = torch.ops.tempattn_C
        kernels = Kernels(getattr(ops, f"{name}_fwd"), getattr(ops, f"{name}_bwd"))
        self[name] = kernels
        return kernels


_EXTENSION_KERNELS: Dict[str, Kernels] = _ExtensionKernels()
