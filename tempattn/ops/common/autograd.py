"""Glue shared by the three custom ops: fake outputs, saved state and the reference backward."""
from typing import Callable, List, Optional, Sequence

import torch

from .reference import accumulate_dtype


def fake_outputs(q: torch.Tensor, v: torch.Tensor):
    """Empty (out, lse) with the shapes and dtypes every backend returns."""
    B, H, Tq, _ = q.shape
    out = q.new_empty((B, H, Tq, v.shape[-1]))
    lse = q.new_empty((B, H, Tq), dtype=accumulate_dtype(q.dtype))
    return out, lse


def row_delta(grad_out: torch.Tensor, out: torch.Tensor, grad_lse: torch.Tensor) -> torch.Tensor:
    """D_i = rowsum(dO * O) - dlse_i, the per-row term of dS = P * (dP - D)."""
    acc = accumulate_dtype(out.dtype)
    # A batched dot product: no (B, H, T, Dv) product tensor, unlike (dO * O).sum(-1).
    return torch.einsum("bhtd,bhtd->bht", grad_out.to(acc), out.to(acc)) - grad_lse.to(acc)


def reference_backward(forward: Callable, tensors: Sequence[Optional[torch.Tensor]], differentiable: Sequence[bool],
                       grad_out: torch.Tensor, grad_lse: torch.Tensor) -> List[torch.Tensor]:
    """Gradients of a reference forward by autograd, one per present differentiable tensor, in order."""
    wants = [d and t is not None for t, d in zip(tensors, differentiable)]
    leaves = [t.detach().requires_grad_(True) if w else t for t, w in zip(tensors, wants)]
    with torch.enable_grad():
        out, lse = forward(*leaves)
        targets = [t for t, w in zip(leaves, wants) if w]
        grads = torch.autograd.grad((out, lse), targets, (grad_out, grad_lse.to(lse.dtype)), allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]


def fake_gradients(tensors: Sequence[Optional[torch.Tensor]], differentiable: Sequence[bool]) -> List[torch.Tensor]:
    return [torch.empty_like(t) for t, d in zip(tensors, differentiable) if d and t is not None]


def register_attention_autograd(fwd_op, bwd_op, differentiable: Sequence[bool], reference: Callable) -> None:
    """Wire ``fwd_op(*tensors, *config, backend) -> (out, lse)`` to its backward.

    Fused backends call ``bwd_op(grad_out, grad_lse, out, lse, *tensors, *config, backend)``,
    which returns the gradients of the present differentiable tensors in order. The
    reference backend differentiates ``reference(*tensors, *config)`` with autograd here,
    outside the custom op, where autograd is live.
    """
    n_tensors = len(differentiable)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensors], *output)
        ctx.config = inputs[n_tensors:]

    def backward(ctx, grad_out, grad_lse):
        *tensors, out, lse = ctx.saved_tensors
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse.contiguous()
        *config, backend = ctx.config
        if backend == "reference":
            grads = reference_backward(lambda *t: reference(*t, *config), tensors, differentiable, grad_out, grad_lse)
        else:
            grads = bwd_op(grad_out, grad_lse, out, lse, *tensors, *ctx.config)
        grads = iter(grads)
        per_input = [next(grads) if d and t is not None else None for t, d in zip(tensors, differentiable)]
        return (*per_input, *([None] * len(ctx.config)))

    fwd_op.register_autograd(backward, setup_context=setup_context)
