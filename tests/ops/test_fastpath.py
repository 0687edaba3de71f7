"""The hot path's C checks (csrc/fastpath.cpp) accept exactly what their Python specifications accept."""
import sys

import pytest
import torch

from tempattn.ops.common import fastpath
from tempattn.ops.common import validation as V

C = fastpath.C_CHECKS
pytestmark = pytest.mark.skipif(C is None, reason="tempattn._C is not built")
MAX_D = V.MAX_HEAD_DIM


class _Sub(torch.Tensor):
    pass


def _qkv(B=2, H=3, Tq=5, Tk=7, D=8, Dv=8, dtype=torch.float32):
    return torch.randn(B, H, Tq, D, dtype=dtype), torch.randn(B, H, Tk, D, dtype=dtype), torch.randn(B, H, Tk, Dv,
                                                                                                    dtype=dtype)


def _qkv_cases():
    q, k, v = _qkv()
    yield "well formed", (q, k, v)
    yield "float64", _qkv(dtype=torch.float64)
    yield "float16", _qkv(dtype=torch.float16)
    yield "bfloat16", _qkv(dtype=torch.bfloat16)
    yield "int q", (q.long(), k, v)
    yield "int all", (q.long(), k.long(), v.long())
    yield "mixed dtype", (q, k.double(), v)
    yield "3-D q", (q[0], k, v)
    yield "5-D v", (q, k, v[None])
    yield "not a tensor", (q, k.tolist(), v)
    yield "None", (None, k, v)
    yield "batch mismatch", (q[:1], k, v)
    yield "head mismatch", (q, k[:, :2], v)
    yield "D mismatch", (q, k[..., :4], v)
    yield "Tk mismatch", (q, k, v[:, :, :3])
    yield "D = 0", (q[..., :0], k[..., :0], v)
    yield "Dv = 0", (q, k, v[..., :0])
    yield "D at the limit", _qkv(D=MAX_D, Dv=MAX_D)
    yield "D past the limit", _qkv(D=MAX_D + 1)
    yield "Dv past the limit", _qkv(Dv=MAX_D + 1)
    yield "transposed (BTHD)", (q.transpose(1, 2).contiguous().transpose(1, 2), k, v)
    yield "last dim strided", (q.transpose(2, 3).contiguous().transpose(2, 3), k, v)
    yield "expanded batch", (q[:1].expand(2, -1, -1, -1), k, v)
    yield "Tq > Tk", (torch.randn(2, 3, 9, 8), k, v)
    yield "empty", _qkv(B=0, Tq=0, Tk=0)
    yield "meta device k", (q, k.to("meta"), v)
    yield "Parameter and subclass", (torch.nn.Parameter(q), k.as_subclass(_Sub), v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name,qkv", list(_qkv_cases()), ids=[n for n, _ in _qkv_cases()])
def test_qkv_layout_matches_its_specification(name, qkv, causal):
    expected = fastpath.py_qkv_layout(*qkv, causal, MAX_D)
    assert C[0](*qkv, causal, MAX_D) == expected
    if name == "well formed":
        assert expected == (2, 3, 5, 7, 8, "cpu")


def _param_cases():
    q = torch.randn(2, 3, 4, 8)
    p = torch.randn(3, 5)
    yield "ready", (p, q, 3, 5)
    yield "any width", (p, q, 3, -1)
    yield "wrong width", (p, q, 3, 4)
    yield "wrong rows", (p, q, 2, 5)
    yield "zero width", (torch.randn(3, 0), q, 3, -1)
    yield "1-D", (torch.randn(3), q, 3, -1)
    yield "3-D", (torch.randn(3, 5, 1), q, 3, -1)
    yield "float64 for float32 q", (p.double(), q, 3, 5)
    yield "float16 for float32 q", (p.half(), q, 3, 5)
    yield "float32 for float16 q", (p, q.half(), 3, 5)
    yield "float64 for float64 q", (p.double(), q.double(), 3, 5)
    yield "float32 for float64 q", (p, q.double(), 3, 5)
    yield "non-contiguous", (torch.randn(5, 3).t(), q, 3, 5)
    yield "int", (p.long(), q, 3, 5)
    yield "int q", (p, q.long(), 3, 5)
    yield "not a tensor", (p.tolist(), q, 3, 5)
    yield "None", (None, q, 3, 5)
    yield "meta device", (p.to("meta"), q, 3, 5)
    yield "Parameter", (torch.nn.Parameter(p), q, 3, 5)
    yield "width past int64", (p, q, 3, sys.maxsize + 1)


@pytest.mark.parametrize("name,args", list(_param_cases()), ids=[n for n, _ in _param_cases()])
def test_param_width_matches_its_specification(name, args):
    assert C[1](*args) == fastpath.py_param_width(*args)
    if name in ("ready", "any width", "Parameter"):
        assert C[1](*args) == 5


def _mode_cases():
    a, b = torch.randn(2), torch.randn(2, requires_grad=True)
    yield "plain", (a, None, a), fastpath.EAGER_NO_GRAD
    yield "requires grad", (a, b, None), fastpath.EAGER_GRAD
    yield "Parameter", (torch.nn.Parameter(torch.randn(2)),), fastpath.EAGER_GRAD
    yield "no tensors", (None,), fastpath.EAGER_NO_GRAD
    yield "subclass", (a, a.as_subclass(_Sub)), fastpath.TRACE
    yield "not a tensor", (a, 3.0), fastpath.TRACE


@pytest.mark.parametrize("name,tensors,expected", list(_mode_cases()), ids=[n for n, _, _ in _mode_cases()])
def test_eager_mode_matches_its_specification(name, tensors, expected):
    assert C[2](*tensors) == fastpath.py_eager_mode(*tensors) == expected
    without_grad = fastpath.TRACE if expected == fastpath.TRACE else fastpath.EAGER_NO_GRAD
    with torch.no_grad():
        assert C[2](*tensors) == fastpath.py_eager_mode(*tensors) == without_grad
    with torch.inference_mode():
        assert C[2](*tensors) == fastpath.py_eager_mode(*tensors)


def test_eager_mode_sees_dispatch_modes_and_functorch():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    a = torch.randn(3)
    with Passthrough():
        assert C[2](a) == fastpath.py_eager_mode(a) == fastpath.TRACE
    with FakeTensorMode():
        assert C[2](a) == fastpath.TRACE
    seen = []
    torch.vmap(lambda x: seen.append((C[2](x), fastpath.py_eager_mode(x))) or x)(torch.randn(2, 3))
    assert seen == [(fastpath.TRACE, fastpath.TRACE)]
    torch.func.grad(lambda x: seen.append((C[2](x), fastpath.py_eager_mode(x))) or x.sum())(torch.randn(3))
    assert seen[-1] == (fastpath.TRACE, fastpath.TRACE)
    assert C[2](a) == fastpath.EAGER_NO_GRAD  # and nothing stays behind
