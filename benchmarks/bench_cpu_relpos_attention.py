"""relpos_attention with window W=64: a learned bias rel_bias[h, i - j] on the last W + 1 keys."""
import torch

import tempattn
from tempattn.bench.anchors import (OpSpec, build_callable, causal_admissible, causal_mask_mod, position_offsets,
                                    spec_cases)
from tempattn.bench.cases import Variant


def make_params(case, device):
    return {"rel_bias": 0.5 * torch.randn(case.H, case.W + 1, device=device)}


def run_tempattn(p, backend):
    return tempattn.relpos_attention(p.q, p.k, p.v, p.params["rel_bias"], window=p.case.W, backend=backend)


def dense_bias(p):
    """(H, T, T): rel_bias[h, i - j] inside the causal window, -inf outside."""
    T, W, device = p.case.T, p.case.W, p.q.device
    bias = p.params["rel_bias"][:, position_offsets(T, device).clamp(0, W)]
    return bias.masked_fill(~causal_admissible(T, W, device), float("-inf"))


def score_mod(p):
    rel_bias, W = p.params["rel_bias"], p.case.W

    def add_rel_bias(score, b, h, q_idx, kv_idx):
        return score + rel_bias[h, (q_idx - kv_idx).clamp(0, W)]
    return add_rel_bias


SPEC = OpSpec(name="relpos_attention", variants=(Variant(W=64),), make_params=make_params,
              run_tempattn=run_tempattn, dense_bias=dense_bias, score_mod=score_mod,
              mask_mod=lambda p: causal_mask_mod(p.case.W))


def cases(profile, devices):
    return spec_cases(SPEC, profile, devices)


def test_relpos_attention(case, run_benchmark):
    run_benchmark(case, lambda: build_callable(SPEC, case))
