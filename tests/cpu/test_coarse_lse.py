"""Rows whose lse float32 cannot hold exactly (every key carrying an additive -1e9): the CPU backward
renormalises them from a rerun of the forward, so its gradients are those of the same formula in float32
(the case and its history: tests/ops/coarse_lse.py)."""
import pytest
import torch

import tempattn
from tests.ops.coarse_lse import BIASES, OPS, assert_gradients_match_the_float32_formula

pytestmark = pytest.mark.skipif(not tempattn.backends()["cpu"]["available"], reason="the C++ extension is not built")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("op", OPS)
def test_gradients_of_rows_with_every_key_biased_match_the_float32_formula(op, bias, dtype):
    assert_gradients_match_the_float32_formula(op, bias, "cpu", dtype)
