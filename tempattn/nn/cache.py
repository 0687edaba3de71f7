"""The key/value cache of the causal attention layers, for incremental decoding."""
from typing import NamedTuple, Optional

import torch
from torch import Tensor


def _append_optional(name: str, old: Optional[Tensor], new: Optional[Tensor], old_len: int, new_len: int,
                     zero_fill: bool) -> Optional[Tensor]:
    """Concatenate ``old (..., old_len)`` and ``new (..., new_len)`` on the last dim.

    A side that is None stands for zeros (False) when ``zero_fill``; otherwise it is
    allowed only when that side has no steps.
    """
    if old is None and new is None:
        return None
    if old is None or new is None:
        present, missing_len = (new, old_len) if old is None else (old, new_len)
        if not zero_fill and missing_len > 0:
            raise ValueError(f"KVCache: `{name}` must be given on every step once used, got it for only part of the "
                             f"sequence; hint: pass `{name}` on every call, or on none")
        filler = present.new_zeros((*present.shape[:-1], missing_len))
        old, new = (filler, new) if old is None else (old, filler)
    return torch.cat([old, new], dim=-1)


def _keep_last(t: Optional[Tensor], dim: int, n: int) -> Optional[Tensor]:
    if t is None:
        return None
    length = t.shape[dim]
    return t.narrow(dim, max(length - n, 0), min(length, n))


class KVCache(NamedTuple):
    """Projected keys and values of past steps, passed to and returned by a causal layer's ``forward``.

    Fields, for ``Tc`` cached steps:

    Attributes:
        k: ``(B, H, Tc, D)`` keys after projection.
        v: ``(B, H, Tc, D)`` values after projection.
        key_padding_mask: ``(B, Tc)`` bool, True = padding; None when no step was padded.
        key_bias: ``(B, H, Tc)`` per-key score bias (the response-category bias of
            :class:`RelativeTemporalAttention`), or None.
        times: ``(B, Tc)`` timestamps of the cached steps (:class:`MultiScaleDecayAttention`
            with ``times``), or None.

    Start from ``layer.empty_cache(batch_size)``. Query positions are bottom-right aligned
    (the new steps come after the cached ones), so dropping the oldest steps, as windowed
    layers do, leaves every relative offset unchanged.
    """
    k: Tensor
    v: Tensor
    key_padding_mask: Optional[Tensor] = None
    key_bias: Optional[Tensor] = None
    times: Optional[Tensor] = None

    @property
    def length(self) -> int:
        """Number of cached steps ``Tc``."""
        return self.k.shape[2]

    def append(self, step: "KVCache") -> "KVCache":
        """This cache followed by ``step`` (the new steps' fields, same layout)."""
        old_len, new_len = self.length, step.length
        return KVCache(
            k=torch.cat([self.k, step.k], dim=2),
            v=torch.cat([self.v, step.v], dim=2),
            key_padding_mask=_append_optional("key_padding_mask", self.key_padding_mask, step.key_padding_mask,
                                              old_len, new_len, zero_fill=True),
            key_bias=_append_optional("key_bias", self.key_bias, step.key_bias, old_len, new_len, zero_fill=False),
            times=_append_optional("times", self.times, step.times, old_len, new_len, zero_fill=False),
        )

    def keep_last(self, n: Optional[int]) -> "KVCache":
        """The last ``n`` steps (all of them when ``n`` is None)."""
        if n is None:
            return self
        return KVCache(k=_keep_last(self.k, 2, n), v=_keep_last(self.v, 2, n),
                       key_padding_mask=_keep_last(self.key_padding_mask, 1, n),
                       key_bias=_keep_last(self.key_bias, 2, n), times=_keep_last(self.times, 1, n))
