"""Random test cases for the three operators: inputs, the public call and the dense oracle."""
import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

import tempattn
from tempattn.testing import dropout_keep_mask

from . import dense


@dataclass(frozen=True)
class Case:
    op: str
    B: int = 2
    H: int = 2
    Tq: int = 9
    Tk: int = 9
    D: int = 16
    Dv: int = 16
    causal: bool = True          # masked_sdpa only; the others are always causal
    window: Optional[int] = None  # relpos / decay
    R: int = 4                   # relpos table size when window is None
    S: int = 3                   # decay scales
    times: bool = False          # decay only
    eps: float = 1e-8            # decay only
    mask: str = "none"           # none | padding | valid | empty_sequence
    key_bias: str = "none"       # none | 2d | 3d
    dropout_p: float = 0.0

    def __str__(self):
        fields = [f"{k}={v}" for k, v in self.__dict__.items() if v != getattr(Case, k, None) and k != "op"]
        return f"{self.op}[{','.join(fields)}]"

    def with_(self, **kw):
        return replace(self, **kw)


DIFFERENTIABLE = {
    "masked_sdpa": ("q", "k", "v", "key_bias"),
    "relpos_attention": ("q", "k", "v", "rel_bias", "key_bias"),
    "decay_attention": ("q", "k", "v", "log_gamma", "alpha_logits", "key_bias"),
}


def _padding(case: Case) -> torch.Tensor:
    """(B, Tk) bool, True = padding: random tails and holes; batch 0 entirely padded for empty_sequence."""
    pad = torch.rand(case.B, case.Tk) < 0.25
    pad[:, 0] = torch.rand(case.B) < 0.5  # some sequences start padded: early causal rows become empty
    if case.mask == "empty_sequence":
        pad[0] = True
    return pad


def make_inputs(case: Case, dtype=torch.float64, requires_grad=True, device="cpu") -> dict:
    B, H, Tq, Tk = case.B, case.H, case.Tq, case.Tk
    x = {
        "q": torch.randn(B, H, Tq, case.D, dtype=dtype),
        "k": torch.randn(B, H, Tk, case.D, dtype=dtype),
        "v": torch.randn(B, H, Tk, case.Dv, dtype=dtype),
    }
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if case.key_bias != "none":
        x["key_bias"] = torch.randn((B, Tk) if case.key_bias == "2d" else (B, H, Tk), dtype=param_dtype)
    if case.op == "relpos_attention":
        R = case.R if case.window is None else case.window + 1
        x["rel_bias"] = torch.randn(H, R, dtype=param_dtype)
    if case.op == "decay_attention":
        x["log_gamma"] = torch.log(torch.empty(H, case.S, dtype=param_dtype).uniform_(0.5, 0.99))
        x["alpha_logits"] = torch.randn(H, case.S, dtype=param_dtype)
    if case.times:
        gaps = torch.rand(B, Tk, dtype=param_dtype) * 3
        gaps[gaps < 0.8] = 0.0  # repeated timestamps
        x["times"] = torch.cumsum(gaps, dim=1) + 1000.0
    if case.mask != "none":
        pad = _padding(case)
        x["key_padding_mask" if case.mask != "valid" else "key_valid_mask"] = pad if case.mask != "valid" else ~pad
    x = {n: t.to(device) for n, t in x.items()}
    for name in DIFFERENTIABLE[case.op]:
        if name in x and requires_grad:
            x[name].requires_grad_(True)
    return x


def call(case: Case, x: dict, backend: str, seed: int = 0, **overrides):
    """The public operator on inputs ``x``: returns (out, lse)."""
    kw = {n: x[n] for n in ("key_padding_mask", "key_valid_mask", "key_bias") if n in x}
    kw.update(dropout_p=case.dropout_p, seed=seed, return_lse=True, backend=backend)
    kw.update(overrides)
    if case.op == "masked_sdpa":
        return tempattn.masked_sdpa(x["q"], x["k"], x["v"], causal=case.causal, **kw)
    if case.op == "relpos_attention":
        return tempattn.relpos_attention(x["q"], x["k"], x["v"], x["rel_bias"], window=case.window, **kw)
    return tempattn.decay_attention(x["q"], x["k"], x["v"], x["log_gamma"], x["alpha_logits"], times=x.get("times"),
                                    eps=case.eps, window=case.window, **kw)


def key_valid(x: dict) -> Optional[torch.Tensor]:
    if "key_padding_mask" in x:
        return ~x["key_padding_mask"]
    return x.get("key_valid_mask")


def oracle(case: Case, x: dict, seed: int = 0, compute_dtype=torch.float64):
    """The independent dense formula on the same inputs (float64 unless told otherwise).

    ``compute_dtype`` sets the precision of q, k, v and the attention arithmetic; score
    parameters and times stay in float32 (float64 for float64), as the operators keep them.
    """
    param_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32  # as the package keeps them
    cast = {n: (t.to(compute_dtype if n in ("q", "k", "v") else param_dtype) if t.is_floating_point() else t)
            for n, t in x.items()}
    causal = case.causal if case.op == "masked_sdpa" else True
    allowed = dense.allowed_table(case.Tq, case.Tk, causal, case.window)
    bias = None
    if case.op == "relpos_attention":
        bias = dense.relpos_bias(cast["rel_bias"], case.Tq, case.Tk)[None]
    elif case.op == "decay_attention":
        bias = dense.decay_bias(cast["log_gamma"], cast["alpha_logits"], case.Tq, case.Tk, cast.get("times"), case.eps)
    keep = None
    if case.dropout_p > 0:
        keep = dropout_keep_mask(seed, case.B, case.H, case.Tq, case.Tk, case.dropout_p)
    return dense.dense_attention(cast["q"], cast["k"], cast["v"], allowed=allowed, bias=bias,
                                 key_bias=cast.get("key_bias"), key_valid=key_valid(x), keep=keep,
                                 dropout_p=case.dropout_p, compute_dtype=compute_dtype)


def loss_weights(out: torch.Tensor, lse: torch.Tensor):
    """Random cotangents for out and (finite entries of) lse, so every gradient path is exercised."""
    return torch.randn(out.shape, dtype=torch.float64), torch.randn(lse.shape, dtype=torch.float64)


def scalar_loss(out, lse, w_out, w_lse):
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return (out.double() * w_out).sum() + (finite_lse.double() * w_lse).sum()


def gradients(case: Case, x: dict, loss: torch.Tensor) -> dict:
    names = [n for n in DIFFERENTIABLE[case.op] if n in x]
    grads = torch.autograd.grad(loss, [x[n] for n in names])
    return dict(zip(names, grads))


def cpu_copy(x: dict, dtype=None) -> dict:
    """Fresh CPU leaves (float ones cast to ``dtype`` if given), keeping requires_grad."""
    return {n: _leaf(t, dtype) for n, t in x.items()}


def _leaf(t: torch.Tensor, dtype) -> torch.Tensor:
    copy = t.detach().cpu()
    copy = copy.to(dtype) if dtype is not None and copy.is_floating_point() else copy.clone()
    return copy.requires_grad_(t.requires_grad)


def scale_of(case: Case) -> float:
    return 1.0 / math.sqrt(case.D)
