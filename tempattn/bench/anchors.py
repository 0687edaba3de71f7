"""The implementations each case runs: tempattn and the anchors a user would otherwise pick.

An :class:`OpSpec` (one per ``benchmarks/bench_*.py``) states an op's semantics four ways
(tempattn call, dense bias or mask, flex score_mod, flex mask_mod); the providers here
turn that into a zero-argument callable that runs one forward, or one forward and
backward, and synchronises the device before returning.

Fairness rules: bool masks and anything not depending on learnable parameters are built
before the clock starts (as is flex's block mask); in ``fwd`` mode the dense bias is also
built once (inference caches it), in ``fwd+bwd`` mode a parameter-dependent bias is
rebuilt inside every call, as training needs. Compilation happens in the warm-up call.
"""
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cases import FLOOR, Case, Profile, Variant, key_valid_mask, op_cases

Fn = Callable[[], Tensor]


@dataclasses.dataclass
class Problem:
    """The tensors of one case: inputs, learnable parameters, padding, output gradient."""
    case: Case
    q: Tensor
    k: Tensor
    v: Tensor
    params: Dict[str, Tensor]
    key_valid: Optional[Tensor]  # (B, T) bool, True = attended
    grad_out: Tensor

    @property
    def differentiable(self) -> Tuple[Tensor, ...]:
        return (self.q, self.k, self.v, *self.params.values())

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.case.D)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One operator's semantics, written for tempattn and for each anchor.

    dense_bias: bool (True = attend) or float (``-inf`` = not admissible) tensor
        broadcastable to (B, H, T, T), used by ``naive`` and ``sdpa_dense``.
    score_mod / mask_mod: build flex_attention's functions for a problem (score_mod may be None).
    """
    name: str
    variants: Sequence[Variant]
    make_params: Callable[[Case, torch.device], Dict[str, Tensor]]
    run_tempattn: Callable[[Problem, str], Tensor]
    dense_bias: Callable[[Problem], Tensor]
    score_mod: Optional[Callable[[Problem], Callable]]
    mask_mod: Callable[[Problem], Callable]
    with_floor: bool = False


def make_problem(spec: OpSpec, case: Case, seed: int = 0) -> Problem:
    torch.manual_seed(seed)
    device = torch.device(case.device)
    requires_grad = case.mode == "fwd+bwd"
    shape = (case.B, case.H, case.T, case.D)
    q, k, v = (torch.randn(shape, dtype=case.torch_dtype, device=device, requires_grad=requires_grad)
               for _ in range(3))
    params = {name: p.requires_grad_(requires_grad) for name, p in spec.make_params(case, device).items()}
    if case.provider == FLOOR:
        params = {}
    grad_out = torch.randn(shape, dtype=case.torch_dtype, device=device)
    return Problem(case, q, k, v, params, key_valid_mask(case, device), grad_out)


def position_offsets(T: int, device) -> Tensor:
    """Delta_ij = i - j, (T, T)."""
    positions = torch.arange(T, device=device)
    return positions[:, None] - positions[None, :]


def causal_admissible(T: int, window: Optional[int], device) -> Tensor:
    """(T, T) bool: 0 <= i - j (<= window)."""
    delta = position_offsets(T, device)
    admissible = delta >= 0
    return admissible if window is None else admissible & (delta <= window)


def causal_mask_mod(window: Optional[int]) -> Callable:
    """flex mask_mod: 0 <= q_idx - kv_idx (<= window)."""
    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def causal_window(b, h, q_idx, kv_idx):
        delta = q_idx - kv_idx
        return (delta >= 0) & (delta <= window)
    return causal if window is None else causal_window


def spec_cases(spec: OpSpec, profile: Profile, devices: Sequence[str]) -> List[Case]:
    return op_cases(spec.name, spec.variants, spec.with_floor, profile, devices)


def _bias_thunk(spec: OpSpec, problem: Problem) -> Callable[[], Tensor]:
    """The dense bias, built once unless it must carry gradients to parameters."""
    if problem.case.mode == "fwd+bwd" and problem.params:
        return lambda: spec.dense_bias(problem)
    bias = spec.dense_bias(problem)
    return lambda: bias


def _apply_bias(scores: Tensor, bias: Tensor) -> Tensor:
    if bias.dtype == torch.bool:
        return scores.masked_fill(~bias, float("-inf"))
    return scores + bias


def _naive(spec: OpSpec, p: Problem) -> Fn:
    bias = _bias_thunk(spec, p)

    def run():
        scores = torch.matmul(p.q, p.k.transpose(-1, -2)) * p.scale
        return torch.matmul(torch.softmax(_apply_bias(scores, bias()), dim=-1), p.v)
    return run


def _sdpa_dense(spec: OpSpec, p: Problem) -> Fn:
    bias = _bias_thunk(spec, p)
    return lambda: F.scaled_dot_product_attention(p.q, p.k, p.v, attn_mask=bias())


def _flex(spec: OpSpec, p: Problem) -> Fn:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    torch._dynamo.reset()  # a fresh compile per case: never hit the recompile limit and fall back to eager
    compiled = torch.compile(flex_attention, dynamic=False)
    c = p.case
    block_mask = create_block_mask(spec.mask_mod(p), c.B, None, c.T, c.T, device=c.device)
    score_mod = spec.score_mod(p) if spec.score_mod else None
    return lambda: compiled(p.q, p.k, p.v, score_mod=score_mod, block_mask=block_mask)


def _sdpa_causal(spec: OpSpec, p: Problem) -> Fn:
    return lambda: F.scaled_dot_product_attention(p.q, p.k, p.v, is_causal=True)


def _tempattn(spec: OpSpec, p: Problem) -> Fn:
    return lambda: spec.run_tempattn(p, p.case.backend)


_PROVIDERS = {"naive": _naive, "sdpa_dense": _sdpa_dense, "flex": _flex, FLOOR: _sdpa_causal}


def _synchronised(fn: Callable[[], object], device: str) -> Callable[[], object]:
    if device != "cuda":
        return fn

    def run():
        result = fn()
        torch.cuda.synchronize()
        return result
    return run


def _with_mode(forward: Fn, p: Problem) -> Callable[[], object]:
    if p.case.mode == "fwd":
        def run_forward():
            with torch.no_grad():
                return forward()
        return run_forward
    return lambda: torch.autograd.grad(forward(), p.differentiable, p.grad_out)


def build_callable(spec: OpSpec, case: Case) -> Callable[[], object]:
    """Zero-argument callable that runs ``case`` once (forward, or forward + backward), synchronised."""
    problem = make_problem(spec, case)
    provider = _tempattn if case.backend is not None else _PROVIDERS[case.provider]
    return _synchronised(_with_mode(provider(spec, problem), problem), case.device)


def matmul_callable(case: Case) -> Callable[[], object]:
    """The N x N fp32 matmul of the ceiling case."""
    a, b = (torch.randn(case.T, case.T, device=case.device) for _ in range(2))
    return _synchronised(lambda: torch.matmul(a, b), case.device)
