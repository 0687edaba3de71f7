"""Per-call latency (host overhead): each operator against SDPA at small shapes and in decoding, timed alternately.

The pairs (scenario, shape, mode, anchor, target) are ``tempattn.bench.latency.PAIRS``; this file
states what each side computes. Both sides of a pair get the same tensors. Masks, index tensors and
(in ``fwd`` mode) dense biases are built before the clock starts; in ``fwd+bwd`` mode the anchor
gathers ``rel_bias`` into its dense bias inside every call, as training must.
"""
import dataclasses
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import tempattn
from tempattn.bench.anchors import causal_admissible, position_offsets
from tempattn.bench.cases import FLOOR
from tempattn.bench.latency import DENSE, PLAIN, STEP, LatencyCase, decode_padding, latency_cases
from tempattn.models.common.step_timing import gpcm_step

Fn = Callable[[], object]


@dataclasses.dataclass
class Inputs:
    q: Tensor
    k: Tensor
    v: Tensor
    params: Dict[str, Tensor]
    key_padding: Optional[Tensor]  # (B, Tk) bool, True = padding
    grad_out: Tensor


def make_inputs(case: LatencyCase, seed: int = 0) -> Inputs:
    """q (B, H, Tq, D), k and v (B, H, Tk, D), the op's parameters; all require grad unless mode is ``fwd``."""
    torch.manual_seed(seed)
    pair, s, device = case.pair, case.pair.shape, torch.device(case.device)

    def randn(*shape):
        return torch.randn(*shape, dtype=case.torch_dtype, device=device)

    q, k, v = randn(s.B, s.H, s.Tq, s.D), randn(s.B, s.H, s.T, s.D), randn(s.B, s.H, s.T, s.D)
    params = {}
    if pair.op == "relpos_attention":
        params["rel_bias"] = 0.5 * randn(s.H, pair.W + 1)
    if pair.op == "decay_attention":
        gammas = torch.linspace(0.7, 0.99, pair.S, dtype=case.torch_dtype, device=device)
        params["log_gamma"] = gammas.log().expand(s.H, pair.S).clone()
        params["alpha_logits"] = 0.1 * randn(s.H, pair.S)
    for tensor in (q, k, v, *params.values()):
        tensor.requires_grad_(pair.mode != "fwd")
    key_padding = decode_padding(s.B, s.T, device) if pair.padded else None
    return Inputs(q, k, v, params, key_padding, randn(s.B, s.H, s.Tq, s.D))


def tempattn_forward(case: LatencyCase, x: Inputs) -> Tuple[Fn, Tuple[Tensor, ...]]:
    """The op as a user calls it (with the case's backend), and the tensors its fwd+bwd differentiates."""
    pair, backend = case.pair, case.backend
    differentiable = (x.q, x.k, x.v, *x.params.values())
    if pair.op == "masked_sdpa":
        return (lambda: tempattn.masked_sdpa(x.q, x.k, x.v, key_padding_mask=x.key_padding, causal=pair.causal,
                                             backend=backend)), differentiable
    if pair.op == "relpos_attention":
        return (lambda: tempattn.relpos_attention(x.q, x.k, x.v, x.params["rel_bias"], window=pair.W,
                                                  backend=backend)), differentiable
    return (lambda: tempattn.decay_attention(x.q, x.k, x.v, x.params["log_gamma"], x.params["alpha_logits"],
                                             backend=backend)), differentiable


def _relpos_dense(case: LatencyCase, x: Inputs) -> Tuple[Fn, Tuple[Tensor, ...]]:
    """SDPA with rel_bias[h, i - j] inside the causal window and -inf outside, as an (H, T, T) float bias."""
    pair, T, device = case.pair, case.pair.shape.T, x.q.device
    assert pair.shape.Tq == T, "the dense relpos bias is built for Tq == Tk"
    index = position_offsets(T, device).clamp(0, pair.W)
    window_mask = torch.zeros(T, T, dtype=x.q.dtype, device=device).masked_fill(
        ~causal_admissible(T, pair.W, device), float("-inf"))
    rel_bias = x.params["rel_bias"]
    if pair.mode == "fwd":  # inference caches the bias
        with torch.no_grad():
            bias = rel_bias[:, index] + window_mask
        return (lambda: F.scaled_dot_product_attention(x.q, x.k, x.v, attn_mask=bias)), (x.q, x.k, x.v)
    return (lambda: F.scaled_dot_product_attention(x.q, x.k, x.v, attn_mask=rel_bias[:, index] + window_mask)), \
        (x.q, x.k, x.v, rel_bias)


def anchor_forward(case: LatencyCase, x: Inputs) -> Tuple[Fn, Tuple[Tensor, ...]]:
    """The SDPA call the op is compared with, and the tensors its fwd+bwd differentiates."""
    pair, qkv = case.pair, (x.q, x.k, x.v)
    if pair.anchor == PLAIN:
        return (lambda: F.scaled_dot_product_attention(x.q, x.k, x.v)), qkv
    if pair.anchor == FLOOR:
        return (lambda: F.scaled_dot_product_attention(x.q, x.k, x.v, is_causal=True)), qkv
    if pair.anchor == DENSE and pair.padded:
        attend = (~x.key_padding)[:, None, None, :]  # (B, 1, 1, Tk), True = attend
        return (lambda: F.scaled_dot_product_attention(x.q, x.k, x.v, attn_mask=attend)), qkv
    if pair.anchor == DENSE and pair.op == "relpos_attention":
        return _relpos_dense(case, x)
    raise ValueError(f"no anchor {pair.anchor!r} for {pair.op}")


def _with_mode(forward: Fn, differentiable: Tuple[Tensor, ...], grad_out: Tensor, mode: str, device: str) -> Fn:
    """``fwd``: under no_grad; ``fwd+grad``: forward with grad on; ``fwd+bwd``: forward + autograd.grad."""
    def run():
        if mode == "fwd":
            with torch.no_grad():
                result = forward()
        elif mode == "fwd+grad":
            with torch.enable_grad():
                result = forward()
        else:
            with torch.enable_grad():
                result = torch.autograd.grad(forward(), differentiable, grad_out)
        if device == "cuda":
            torch.cuda.synchronize()
        return result
    return run


def _synchronized(step: Fn, device: str) -> Fn:
    def run():
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def build_model_steps(case: LatencyCase) -> Tuple[Fn, Fn]:
    """(model, baseline): one training step each on the same batch, with the case's backend."""
    pair, device = case.pair, case.device
    return tuple(_synchronized(gpcm_step(name, pair.shape.B, pair.shape.T, device, backend=case.backend), device)
                 for name in (pair.op, pair.anchor))


def build_pair(case: LatencyCase) -> Tuple[Fn, Fn]:
    """(tempattn, anchor): zero-argument callables on the same inputs, each one call in the pair's mode."""
    if case.pair.scenario == STEP:
        return build_model_steps(case)
    x = make_inputs(case)
    mode, device = case.pair.mode, case.device
    return (_with_mode(*tempattn_forward(case, x), x.grad_out, mode, device),
            _with_mode(*anchor_forward(case, x), x.grad_out, mode, device))


def cases(profile, devices):
    return latency_cases(devices)


def test_call_latency(case, run_latency):
    run_latency(case, lambda: build_pair(case))
