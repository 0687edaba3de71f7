"""fp16 / bf16 outputs and gradients stay within ~2x the error of the same-precision PyTorch formula."""
import pytest
import torch

from tests.conftest import TARGETS
from tests.ops.cases import Case, call, cpu_copy, gradients, loss_weights, make_inputs, oracle, scalar_loss

CASES = [Case("masked_sdpa", Tq=40, Tk=40, D=40, Dv=40, mask="padding", key_bias="2d"),
         Case("relpos_attention", Tq=40, Tk=40, D=40, Dv=40, window=7, key_bias="3d"),
         Case("decay_attention", Tq=40, Tk=40, D=40, Dv=40, times=True, mask="padding")]


def _max_error(a, b):
    return (a.double().cpu() - b.double().cpu()).abs().max().item()


def _run(case, x, compute):
    """(out, lse, leaves) of the oracle evaluated in ``compute`` precision, on CPU."""
    y = cpu_copy(x)
    out, lse = oracle(case, y, compute_dtype=compute)
    return out, lse, y


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_low_precision_error_is_bounded_by_same_precision_pytorch(case, dtype, target):
    if dtype == torch.bfloat16 and not target.bf16_arithmetic:
        pytest.skip("bf16 arithmetic is wrong under TRITON_INTERPRET; tested on GPU")
    x = make_inputs(case, dtype, device=target.device)
    out, lse = call(case, x, target.backend)
    exact_out, exact_lse, exact_x = _run(case, x, torch.float64)
    base_out, base_lse, base_x = _run(case, x, dtype)
    w_out, w_lse = loss_weights(out, lse)
    grads = gradients(case, x, scalar_loss(out, lse, w_out, w_lse))
    exact = gradients(case, exact_x, scalar_loss(exact_out, exact_lse, w_out, w_lse))
    base = gradients(case, base_x, scalar_loss(base_out, base_lse, w_out, w_lse))
    floor = 2 * torch.finfo(dtype).eps  # two ulps of the output precision, relative to each tensor's scale
    assert _max_error(out, exact_out) <= 2 * _max_error(base_out.to(dtype), exact_out) + floor
    for name in grads:
        bound = 2 * _max_error(base[name], exact[name]) + floor * exact[name].abs().max().item()
        assert _max_error(grads[name], exact[name]) <= bound, name
