"""Local causal context: a depthwise causal 1-D convolution with a residual."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import _heads


class TemporalContext(nn.Module):
    """``y_t = x_t + sum_{s < kernel_size} w_s * x_{t - s} + b``, per channel (depthwise), causal.

    Args:
        dim: channels ``C``; kernel_size: ``K >= 1`` steps (the current one and ``K - 1`` back).
        bias: learn a per-channel bias.

    Parameters: ``conv.weight (C, 1, K)``, ``conv.bias (C,)`` (PyTorch's Conv1d initialisation).
    Steps before the start count as zeros, so padding must be at the end (right) of a
    sequence, or be zeros, to leave the real steps unchanged.
    """

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__()
        layer = type(self).__name__
        _heads.check_positive_int(layer, "dim", dim, "dim is the channel count C of the (B, T, C) input")
        _heads.check_positive_int(layer, "kernel_size", kernel_size, "kernel_size=1 mixes no neighbouring steps")
        self.dim = dim
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}, bias={self.conv.bias is not None}"

    def empty_cache(self, batch_size: int) -> Tensor:
        """The state before the first step: ``(B, K - 1, C)`` zeros."""
        return self.conv.weight.new_zeros((batch_size, self.kernel_size - 1, self.dim))

    def forward(self, x: Tensor, *, cache: Optional[Tensor] = None):
        """Args:
            x: ``(B, T, C)``.
            cache: optional ``(B, K - 1, C)``, the inputs of the previous ``K - 1`` steps
                (``empty_cache`` at the start), for step-by-step decoding.

        Returns:
            ``(B, T, C)``; with ``cache``, ``(out, new_cache)``.
        """
        layer = type(self).__name__
        _heads.check_features(layer, "x", x, (3,), self.dim, "(B, T, dim)")
        if cache is None:  # zeros before the start: one pad of the (B, C, T) view, no zeros tensor
            return x + self.conv(F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))).transpose(1, 2)
        expected = (x.shape[0], self.kernel_size - 1, self.dim)
        if not isinstance(cache, Tensor) or tuple(cache.shape) != expected:
            _heads.fail(layer, "cache", f"a tensor of shape (B, K - 1, C) = {expected}", _heads.describe(cache),
                        "start from `layer.empty_cache(batch_size)` and pass back the returned cache")
        padded = torch.cat([cache.to(x.dtype), x], dim=1)
        y = x + self.conv(padded.transpose(1, 2)).transpose(1, 2)
        return y, padded[:, padded.shape[1] - (self.kernel_size - 1):]
