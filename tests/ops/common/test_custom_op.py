"""Each operator is a torch.library custom op: opcheck passes and torch.compile(fullgraph=True) traces it."""
import pytest
import torch

import tempattn
from tempattn.ops.decay_attention.op import decay_attention_fwd
from tempattn.ops.masked_sdpa.op import masked_sdpa_fwd
from tempattn.ops.relpos_attention.op import relpos_attention_fwd
from tests.conftest import TARGETS
from tests.ops.cases import Case, call, make_inputs

OPS = ["masked_sdpa", "relpos_attention", "decay_attention"]


def _sample_args(op, target, with_optionals):
    """Positional arguments of the forward custom op for a small random case."""
    B, H, T, D = 2, 2, 7, 8
    backend = target.backend
    torch.set_default_device(target.device)
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float32, requires_grad=True) for _ in range(3))
    valid = torch.rand(B, T) > 0.3 if with_optionals else None
    key_bias = torch.randn(B, H, T, requires_grad=True) if with_optionals else None
    if op == "masked_sdpa":
        return masked_sdpa_fwd, (q, k, v, valid, key_bias, True, 0.0, 0, 0.35, backend)
    if op == "relpos_attention":
        rel = torch.randn(H, 4, requires_grad=True)
        return relpos_attention_fwd, (q, k, v, rel, valid, key_bias, 3, 0.0, 0, 0.35, backend)
    lg = torch.log(torch.rand(H, 3) * 0.5 + 0.4).requires_grad_(True)
    al = torch.randn(H, 3, requires_grad=True)
    times = torch.cumsum(torch.rand(B, T), 1) if with_optionals else None
    return decay_attention_fwd, (q, k, v, lg, al, times, valid, key_bias, -1, 1e-8, 0.0, 0, 0.35, backend)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("with_optionals", [False, True])
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, with_optionals, target):
    try:
        fwd, args = _sample_args(op, target, with_optionals)
    finally:
        torch.set_default_device("cpu")
    torch.library.opcheck(fwd, args)


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
