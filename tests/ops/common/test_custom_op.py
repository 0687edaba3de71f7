"""Each operator is a torch.library custom op: opcheck passes and torch.compile(fullgraph=True) traces it."""
import pytest
import torch

import tempattn
from tempattn.ops.decay_attention.op import DECAY_ATTENTION
from tempattn.ops.masked_sdpa.op import MASKED_SDPA
from tempattn.ops.relpos_attention.op import RELPOS_ATTENTION
from tests.conftest import TARGETS
from tests.ops.cases import Case, call, make_inputs

OPS = ["masked_sdpa", "relpos_attention", "decay_attention"]


LAYOUTS = ["contiguous", "transposed", "strided", "expanded"]


def _laid_out(B, H, T, D, layout):
    """A (B, H, T, D) leaf-derived tensor in a memory layout users pass: contiguous, BTHD transposed to
    BHTD (as MultiheadAttention's head split), a strided slice, or expanded over the batch."""
    if layout == "transposed":
        return torch.randn(B, T, H, D, requires_grad=True).transpose(1, 2)
    if layout == "strided":
        return torch.randn(B, H, 2 * T, D + 3, requires_grad=True)[:, :, ::2, :D]
    if layout == "expanded":
        return torch.randn(1, H, T, D, requires_grad=True).expand(B, H, T, D)
    return torch.randn(B, H, T, D, requires_grad=True)


def _sample_args(op, target, with_optionals, layout="contiguous"):
    """Positional arguments of the forward custom op for a small random case."""
    B, H, T, D = 2, 2, 7, 8
    backend = target.backend
    torch.set_default_device(target.device)
    q, k, v = (_laid_out(B, H, T, D, layout) for _ in range(3))
    valid = torch.rand(B, T) > 0.3 if with_optionals else None
    key_bias = torch.randn(B, H, T, requires_grad=True) if with_optionals else None
    if op == "masked_sdpa":
        return MASKED_SDPA.fwd_op, (q, k, v, valid, key_bias, True, 0.0, 0, 0.35, backend)
    if op == "relpos_attention":
        rel = torch.randn(H, 4, requires_grad=True)
        return RELPOS_ATTENTION.fwd_op, (q, k, v, rel, valid, key_bias, 3, 0.0, 0, 0.35, backend)
    lg = torch.log(torch.rand(H, 3) * 0.5 + 0.4).requires_grad_(True)
    al = torch.randn(H, 3, requires_grad=True)
    times = torch.cumsum(torch.rand(B, T), 1) if with_optionals else None
    return DECAY_ATTENTION.fwd_op, (q, k, v, lg, al, times, valid, key_bias, None, 1e-8, 0.0, 0, 0.35, backend)


def _sample_on_cpu_default(op, target, with_optionals, layout="contiguous"):
    """_sample_args with torch's default device put back afterwards."""
    try:
        return _sample_args(op, target, with_optionals, layout)
    finally:
        torch.set_default_device("cpu")


# Without the optional tensors contiguously, and with them in every layout: the fakes promise what the kernels
# return for every input layout (the backward's strides included).
OPCHECK_CASES = [(False, "contiguous")] + [(True, layout) for layout in LAYOUTS]


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("with_optionals,layout", OPCHECK_CASES)
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, with_optionals, layout, target):
    torch.library.opcheck(*_sample_on_cpu_default(op, target, with_optionals, layout))


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("op", OPS)
def test_torch_compile_forward_and_backward_non_contiguous(op, layout, target):
    """Inductor checks every output's strides against the fake: a compiled training step over views."""
    fwd, args = _sample_on_cpu_default(op, target, True, layout)
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def loss(*call_args):
        out, lse = fwd(*call_args)
        return out.square().sum() + torch.where(torch.isfinite(lse), lse, 0.0).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="inductor")
    expected = torch.autograd.grad(loss(*args), tensors)
    got = torch.autograd.grad(compiled(*args), tensors)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def _case(op):
    return Case(op, Tq=10, Tk=10, window=3 if op == "relpos_attention" else None, times=op == "decay_attention",
                mask="padding", key_bias="2d")


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("op", OPS)
def test_torch_compile_fullgraph_forward_and_backward(op, compiler, target):
    case = _case(op)
    x = make_inputs(case, torch.float32, device=target.device)

    def loss(inputs):
        out, lse = call(case, inputs, target.backend)
        return out.square().sum() + torch.where(torch.isfinite(lse), lse, 0.0).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend=compiler)
    expected = loss(x)
    expected_grads = torch.autograd.grad(expected, [x["q"], x["k"]])
    got = compiled(x)
    got_grads = torch.autograd.grad(got, [x["q"], x["k"]])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_public_functions_are_exported():
    for name in OPS + ["backends"]:
        assert callable(getattr(tempattn, name))
    assert callable(tempattn.testing.dropout_keep_mask)


def test_compiled_dropout_draws_a_fresh_seed_per_call_from_torch_generator():
    q = torch.randn(1, 2, 8, 8)
    compiled = torch.compile(lambda t: tempattn.masked_sdpa(t, t, t, dropout_p=0.5, backend="reference"),
                             fullgraph=True, backend="aot_eager")
    assert not torch.equal(compiled(q), compiled(q))
    torch.manual_seed(3)
    first = compiled(q)
    torch.manual_seed(3)
    assert torch.equal(first, compiled(q))


# Schema types of the declaration as the C++ schemas print them.
_CPP_TYPES = {"Tensor": "Tensor", "Tensor?": "Optional[Tensor]", "SymInt": "int", "SymInt?": "Optional[int]",
              "float": "float", "bool": "bool"}


@pytest.mark.skipif(not tempattn.backends()["cpu"]["available"], reason="the C++ extension is not built")
@pytest.mark.parametrize("declared", [MASKED_SDPA, RELPOS_ATTENTION, DECAY_ATTENTION], ids=OPS)
def test_cpu_kernel_schemas_follow_the_declaration(declared):
    """The C++ operators (csrc/cpu/bindings.cpp) take the declared arguments, in order, with the declared
    types: the relay passes ``(*tensors, *config)`` to them positionally."""
    arguments = ([(n, _CPP_TYPES[k]) for n, k, _ in declared.tensor_specs]
                 + [(n, _CPP_TYPES[k]) for n, k in declared.config_specs])
    ops = torch.ops.tempattn_C
    forward = getattr(ops, f"{declared.name}_fwd").default._schema
    backward = getattr(ops, f"{declared.name}_bwd").default._schema
    assert [(a.name, str(a.type)) for a in forward.arguments] == arguments
    assert [(a.name, str(a.type)) for a in backward.arguments] == [
        ("grad_out", "Tensor"), ("out", "Tensor"), ("grad_lse", "Optional[Tensor]"), ("lse", "Tensor")] + arguments
