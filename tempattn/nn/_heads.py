"""Pieces shared by the attention layers: argument checks, q/k/v projection, head split and merge.

Shapes: ``B`` batch, ``T`` sequence length, ``E = H * D`` model width, ``H`` heads, ``D`` head dim.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _dispatch


def fail(layer: str, name: str, expected: str, got, hint: str, exc=ValueError):
    """Raise ``exc`` with the message format used across tempattn."""
    raise exc(f"{layer}: `{name}` must be {expected}, got {got}; hint: {hint}")


def describe(t) -> str:
    if isinstance(t, Tensor) and t.is_nested:  # a strided nested tensor has no shape
        return f"nested tensor ({t.layout}) of {t.size(0)} sequences, dtype {t.dtype}"
    if isinstance(t, Tensor):
        return f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}"
    return f"{type(t).__name__} {t!r}"


def check_positive_int(layer: str, name: str, value, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(layer, name, "a positive int", describe(value), hint, TypeError)
    if value <= 0:
        fail(layer, name, "a positive int", value, hint)


def check_window(layer: str, window, allow_none: bool) -> None:
    """``window`` must be an int ``>= 0`` (or None when ``allow_none``)."""
    if window is None and allow_none:
        return
    expected = "an int >= 0" + (" or None" if allow_none else "")
    hint = "window=W attends to the W + 1 most recent steps" + ("; None for all" if allow_none else "")
    if isinstance(window, bool) or not isinstance(window, int):
        fail(layer, "window", expected, describe(window), hint, TypeError)
    if window < 0:
        fail(layer, "window", expected, window, hint)


def check_head_config(layer: str, embed_dim, num_heads) -> int:
    """Check ``embed_dim`` and ``num_heads``; return the head dim ``embed_dim // num_heads``."""
    check_positive_int(layer, "embed_dim", embed_dim, "embed_dim is the model width E of the (B, T, E) input")
    check_positive_int(layer, "num_heads", num_heads, "use num_heads=1 for single-head attention")
    if embed_dim % num_heads:
        divisors = [h for h in range(1, embed_dim + 1) if embed_dim % h == 0]
        fail(layer, "num_heads", f"a divisor of embed_dim = {embed_dim}", num_heads,
             f"pick one of {divisors[:12]} so every head gets embed_dim // num_heads features")
    return embed_dim // num_heads


def check_dropout(layer: str, dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        fail(layer, "dropout", "a float in [0, 1)", describe(dropout), "pass e.g. dropout=0.1", TypeError)
    if not 0.0 <= dropout < 1.0:
        fail(layer, "dropout", "in [0, 1)", dropout, "dropout=1 would drop every attention weight")
    return float(dropout)


def check_backend(layer: str, backend) -> str:
    choices = ("auto",) + _dispatch.BACKENDS
    if backend not in choices:
        fail(layer, "backend", f"one of {choices}", repr(backend), "leave it at 'auto'")
    return backend


def check_features(layer: str, name: str, x, ndims: Tuple[int, ...], width: int, layout: str) -> None:
    """``x`` must be a float tensor with ``ndims`` dims and ``width`` features in its last dim."""
    if not isinstance(x, Tensor):
        fail(layer, name, f"a tensor of shape {layout}", describe(x), "convert it with torch.as_tensor", TypeError)
    if not x.is_floating_point():
        fail(layer, name, "a float tensor", x.dtype, f"cast it, e.g. `{name}.float()`", TypeError)
    if x.dim() not in ndims or x.shape[-1] != width:
        fail(layer, name, f"of shape {layout} with {width} features last", tuple(x.shape),
             "the last dim must equal the width the layer was built with")


def check_key_padding_mask(layer: str, mask, batch: int, length: int) -> None:
    """``mask`` must be None or a ``(B, T)`` bool tensor, True = padding."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        fail(layer, "key_padding_mask", "a bool tensor (True = padding, ignored)", describe(mask),
             "build it as `lengths[:, None] <= torch.arange(T)`", TypeError)
    if tuple(mask.shape) != (batch, length):
        fail(layer, "key_padding_mask", f"of shape (B, T) = {(batch, length)}", tuple(mask.shape),
             "one entry per batch row and time step of the input")


def dropout_p(module) -> float:
    """The attention dropout rate to apply now: ``module.dropout`` in training, 0 in eval."""
    return module.dropout if module.training else 0.0


def packed_projection(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Self-attention q, k, v ``(..., E)`` each from ``x (..., E_in)`` and a packed ``(3E, E_in)`` weight."""
    return F.linear(x, weight, bias).chunk(3, dim=-1)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, T, H*D) -> (B, H, T, D)``, a view whose last dim keeps stride 1."""
    return x.view(*x.shape[:-1], num_heads, x.shape[-1] // num_heads).transpose(1, 2)  # unflatten, minus its wrapper


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, T, D) -> (B, T, H*D)``."""
    return x.transpose(1, 2).flatten(2)
