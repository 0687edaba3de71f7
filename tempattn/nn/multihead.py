"""A drop-in replacement for ``torch.nn.MultiheadAttention`` on the fused ``masked_sdpa`` operator."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ..ops import masked_sdpa
from . import _heads

_LAYER = "MultiheadAttention"


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask (True = masked) or float mask as additive scores (``-inf`` where masked)."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


_ALIGNMENTS = ("top_left", "bottom_right")


def _causal_mask(Tq: int, Tk: int, alignment: str, device) -> Tensor:
    """``(Tq, Tk)`` bool, True = masked: query ``i`` sees keys ``j <= i`` (``"top_left"``, PyTorch's
    ``is_causal``) or ``j <= i + Tk - Tq`` (``"bottom_right"``, tempattn's operators)."""
    first_masked = 1 if alignment == "top_left" else Tk - Tq + 1
    return torch.ones(Tq, Tk, dtype=torch.bool, device=device).triu(first_masked)


def _detect_causal_mask(attn_mask: Optional[Tensor], Tq: int, Tk: int) -> Optional[str]:
    """The alignment of ``attn_mask`` if it is a 2-D causal mask, bool or float (0 / -inf), else None.

    Reads the mask, so it is skipped (None: dense path) while ``torch.compile`` traces.
    """
    if attn_mask is None or attn_mask.dim() != 2 or torch.compiler.is_compiling():
        return None
    blocked = attn_mask
    if attn_mask.is_floating_point():
        blocked = torch.isneginf(attn_mask)
        if not bool((attn_mask.masked_fill(blocked, 0.0) == 0).all()):
            return None
    return next((a for a in _ALIGNMENTS if torch.equal(blocked, _causal_mask(Tq, Tk, a, attn_mask.device))), None)


def _operator_key_masks(mask: Optional[Tensor], n_extra: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """A ``(B, S)`` ``key_padding_mask`` as the operator's bool ``key_padding_mask`` and ``key_bias``.

    A float mask is added to the scores, as in PyTorch: its ``-inf`` entries remove their key
    and the rest become a finite ``key_bias`` (the operator treats non-finite bias as data,
    not as a mask). The ``n_extra`` appended keys stay visible.
    """
    if mask is None:
        return None, None
    if mask.dtype == torch.bool:
        return F.pad(mask, (0, n_extra), value=False), None
    mask = F.pad(mask, (0, n_extra), value=0.0)
    blocked = torch.isneginf(mask)
    return blocked, mask.masked_fill(blocked, 0.0)


def _dense_attention(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor],
                     dropout_p: float) -> Tuple[Tensor, Tensor]:
    """Softmax attention with a dense additive ``bias`` and the weights; the documented dense path.

    q ``(B, H, Tq, D)``, k ``(B, H, Tk, D)``, v ``(B, H, Tk, Dv)``, bias broadcastable to
    ``(B, H, Tq, Tk)`` (``-inf`` = masked). Returns ``out (B, H, Tq, Dv)`` and ``weights
    (B, H, Tq, Tk)`` after dropout. A row with every key masked gives zero weights and output.
    """
    scores = (q * math.sqrt(1.0 / q.shape[-1])) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def _check_mask_type(name: str, mask: Tensor) -> None:
    if not isinstance(mask, Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
        _heads.fail(_LAYER, name, "a bool (True = masked) or float (additive) tensor", _heads.describe(mask),
                    "convert an integer mask with `.bool()` after checking its convention", TypeError)


def _check_alignment(alignment) -> str:
    if alignment not in _ALIGNMENTS:
        _heads.fail(_LAYER, "causal_alignment", f"one of {_ALIGNMENTS}", repr(alignment),
                    "'top_left' is PyTorch's is_causal; 'bottom_right' aligns the last query with the last key "
                    "(decoding against a key/value cache)")
    return alignment


def _nested_lengths(x: Tensor, width: int) -> List[int]:
    """The sequence lengths of a nested ``(B, j, width)`` query, each sequence checked."""
    shapes = [tuple(t.shape) for t in x.unbind()]
    if not shapes or any(len(shape) != 2 or shape[1] != width for shape in shapes):
        _heads.fail(_LAYER, "query", f"a nested tensor of (length, {width}) sequences",
                    f"sequences of shapes {shapes}", "the feature size must equal embed_dim")
    return [shape[0] for shape in shapes]


def _run_own_forward(module: nn.Module, args: tuple) -> None:
    """A forward pre-hook that does nothing: its presence makes torch's Transformer layers call our forward.

    In eval mode without autograd, ``nn.TransformerEncoderLayer.forward`` runs the whole layer as
    the native ``torch._transformer_encoder_layer_fwd`` on ``self_attn``'s weights (after calling
    ``self_attn.merge_masks``), never calling ``self_attn``, unless a ``why_not_sparsity_fast_path``
    check declines. One check is "forward pre-/hooks are attached to the module": the native
    kernel would skip a submodule's forward, so torch keeps the module-by-module path whenever a
    submodule's forward must run. This module's forward must run: it is the attention.
    """


class MultiheadAttention(nn.Module):
    """Drop-in for :class:`torch.nn.MultiheadAttention`: same arguments, forward, outputs and ``state_dict``.

    Args: as ``torch.nn.MultiheadAttention`` (embed_dim, num_heads, dropout, bias, add_bias_kv,
    add_zero_attn, kdim, vdim, batch_first, device, dtype), plus the keywords ``backend``
    ("auto") choosing the :func:`tempattn.masked_sdpa` backend and ``causal_alignment``:
    the causal mask ``is_causal=True`` stands for when ``L != S``. ``"top_left"`` (default, as
    PyTorch: query ``i`` sees keys ``j <= i``) or ``"bottom_right"`` (tempattn's operators:
    ``j <= i + S - L``, so ``L`` new queries against a key/value cache of ``S`` steps are the
    last ``L`` rows of the full causal attention).

    Parameters (same names as PyTorch): ``in_proj_weight (3E, E)`` or, when ``kdim``/``vdim``
    differ from ``embed_dim``, ``q_proj_weight (E, E)``, ``k_proj_weight (E, kdim)``,
    ``v_proj_weight (E, vdim)``; ``in_proj_bias (3E,)``; ``out_proj.weight/bias``;
    ``bias_k``, ``bias_v`` ``(1, 1, E)`` with ``add_bias_kv``.

    Two paths compute the same results:

    - fused: one :func:`tempattn.masked_sdpa` call, taken when ``need_weights=False`` and
      ``attn_mask`` is None or causal (``is_causal=True``, or a 2-D bool / 0-and-``-inf`` mask
      equal to the top-left or bottom-right causal mask; the mask is read for that, except while
      ``torch.compile`` traces). A bool ``key_padding_mask`` is the operator's; a float one is
      split into its ``-inf`` entries (masked keys) and a finite ``key_bias``. Top-left causal
      attention runs as the operator's bottom-right causal attention over the first ``L`` keys
      (no query sees a later one).
    - dense: PyTorch softmax over materialised ``(B, H, L, S)`` scores, for a non-causal or 3-D
      ``attn_mask``, ``need_weights=True``, causal attention with ``add_bias_kv``/``add_zero_attn``,
      or causal attention with ``L > S``. Its dropout uses ``F.dropout`` (torch's generator)
      rather than the operator's Philox mask.

    As the ``self_attn`` / ``multihead_attn`` of torch's ``nn.Transformer*`` modules this forward
    runs in every mode: the module carries a no-op forward pre-hook, and a hooked submodule is
    one of the reasons ``nn.TransformerEncoderLayer`` gives for not replacing the whole layer with
    its native fused kernel. The nested tensors ``nn.TransformerEncoder`` makes from a
    ``src_key_padding_mask`` in eval mode without autograd are handled (see below).

    Differences from PyTorch:

    - A query with no admissible key (e.g. a fully padded sequence) gives zeros, not NaN,
      in the output and the weights.
    - ``is_causal=True`` without ``attn_mask`` applies the causal mask of ``causal_alignment``
      (PyTorch raises, or ignores ``is_causal`` on its native fast path). As in PyTorch,
      ``is_causal=True`` with ``attn_mask`` is a hint that ``attn_mask`` is that causal mask;
      the fused path then does not read it, the dense path applies ``attn_mask``.
      With ``add_bias_kv``/``add_zero_attn`` the extra keys stay visible to every query, as
      PyTorch does with ``need_weights=True`` (its ``need_weights=False`` path hides them).
    - Bad arguments raise ``ValueError``/``TypeError`` naming the argument (not ``AssertionError``);
      ``dropout`` must lie in ``[0, 1)`` (the operator's range).
    - Nested tensors (strided or jagged layout) are accepted in every mode, not only on a native
      fast path, under PyTorch's conditions: self-attention (``query is key is value``),
      ``batch_first=True``, no ``key_padding_mask`` or ``attn_mask`` (the lengths are the padding).
      The output is nested like ``query``; weights come padded, zero outside each sequence.
    - No native fast path: every mode runs the paths above.
    """

    __constants__ = ["batch_first"]

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, device=None, dtype=None, *,
                 backend: str = "auto", causal_alignment: str = "top_left") -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.head_dim = _heads.check_head_config(_LAYER, embed_dim, num_heads)
        for name, dim in (("kdim", kdim), ("vdim", vdim)):
            if dim is not None:
                _heads.check_positive_int(_LAYER, name, dim, f"{name} is the feature size of the {name[0]} input")
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = _heads.check_dropout(_LAYER, dropout)
        self.batch_first = batch_first
        self.backend = _heads.check_backend(_LAYER, backend)
        self.causal_alignment = _check_alignment(causal_alignment)
        self._register_projections(bias, add_bias_kv, factory)
        self.add_zero_attn = add_zero_attn
        self.reset_parameters()
        self.register_forward_pre_hook(_run_own_forward)

    def _register_projections(self, bias: bool, add_bias_kv: bool, factory: dict) -> None:
        E = self.embed_dim
        separate = {"q_proj_weight": (E, E), "k_proj_weight": (E, self.kdim), "v_proj_weight": (E, self.vdim)}
        for name, shape in separate.items():
            weight = None if self._qkv_same_embed_dim else nn.Parameter(torch.empty(shape, **factory))
            self.register_parameter(name, weight)
        packed = nn.Parameter(torch.empty((3 * E, E), **factory)) if self._qkv_same_embed_dim else None
        self.register_parameter("in_proj_weight", packed)
        self.register_parameter("in_proj_bias", nn.Parameter(torch.empty(3 * E, **factory)) if bias else None)
        self.out_proj = NonDynamicallyQuantizableLinear(E, E, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, E), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, E), **factory))
        else:
            self.bias_k = self.bias_v = None

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: Xavier-uniform projections, zero biases, Xavier-normal ``bias_k/v``."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        self.out_proj.reset_parameters()
        for bias in (self.in_proj_bias, self.out_proj.bias):
            if bias is not None:
                nn.init.zeros_(bias)
        for bias in (self.bias_k, self.bias_v):
            if bias is not None:
                nn.init.xavier_normal_(bias)

    _reset_parameters = reset_parameters  # the name PyTorch's MultiheadAttention uses

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"bias={self.in_proj_bias is not None}, add_bias_kv={self.bias_k is not None}, "
                f"add_zero_attn={self.add_zero_attn}, kdim={self.kdim}, vdim={self.vdim}, "
                f"batch_first={self.batch_first}, backend={self.backend!r}, "
                f"causal_alignment={self.causal_alignment!r}")

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Attention of ``query`` over ``key``/``value``, as ``torch.nn.MultiheadAttention.forward``.

        Args:
            query: ``(L, B, E)``, or ``(B, L, E)`` with ``batch_first``, or unbatched ``(L, E)``;
                or a nested ``(B, j, E)`` tensor passed as key and value too (self-attention).
            key: ``(S, B, kdim)`` / ``(B, S, kdim)`` / ``(S, kdim)``; value likewise with ``vdim``.
            key_padding_mask: ``(B, S)`` (unbatched ``(S,)``) bool, True = ignore this key, or
                float, added to the scores.
            need_weights: also return the attention weights (forces the dense path).
            attn_mask: ``(L, S)`` or ``(B * num_heads, L, S)`` (unbatched ``(num_heads, L, S)``),
                bool (True = not allowed) or float (added to the scores).
            average_attn_weights: average the returned weights over heads.
            is_causal: hint that ``attn_mask`` is the causal mask of ``causal_alignment``
                (top-left by default, as PyTorch); ``attn_mask`` may then be None here.

        Returns:
            ``attn_output`` shaped like ``query`` (nested if it is) with ``E`` features and ``attn_weights``:
            ``(B, L, S')`` averaged or ``(B, H, L, S')`` per head (no ``B`` when unbatched;
            ``S'`` counts ``bias_k`` and the zero key), or None when ``need_weights=False``.
        """
        if self._nested_call(query, key, value, key_padding_mask, attn_mask):
            return self._forward_nested(query, need_weights, average_attn_weights, is_causal)
        batched = self._check_inputs(query, key, value)
        self_attention = query is key and key is value
        query, key, value = (self._batch_major(t, batched) for t in (query, key, value))
        B, L, S = query.shape[0], query.shape[1], key.shape[1]
        key_padding_mask = self._checked_key_padding_mask(key_padding_mask, batched, B, S)
        self._check_attn_mask(attn_mask, B, L, S)
        q, k, v = self._project(query, key, value, self_attention)
        k, v, n_extra = self._append_extra_keys(k, v)
        causal = self.causal_alignment if is_causal else _detect_causal_mask(attn_mask, L, S)
        if self._fused_path_applies(need_weights, attn_mask, causal, n_extra, L, S):
            out, weights = self._fused_attention(q, k, v, key_padding_mask, causal, n_extra), None
        else:
            bias = self._dense_bias(attn_mask, key_padding_mask, causal, q, S, n_extra)
            out, weights = _dense_attention(q, k, v, bias, _heads.dropout_p(self))
        out = self._restore_layout(self.out_proj(_heads.merge_heads(out)), batched)
        return out, self._format_weights(weights, need_weights, average_attn_weights, batched)

    # ---- nested inputs -----------------------------------------------------------------------

    def _nested_call(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        """Whether the inputs are nested; raise unless they are as PyTorch accepts them (see the class doc)."""
        hint = "pad the batch (torch.nested.to_padded_tensor) and pass key_padding_mask instead"
        if not (isinstance(query, Tensor) and query.is_nested):
            for name, t in (("key", key), ("value", value)):
                if isinstance(t, Tensor) and t.is_nested:
                    _heads.fail(_LAYER, name, "a regular tensor like query", _heads.describe(t), hint, TypeError)
            return False
        for name, t in (("key", key), ("value", value)):
            if t is not query:
                _heads.fail(_LAYER, name, "the nested query itself (nested inputs mean self-attention, as in "
                            "PyTorch)", _heads.describe(t), hint, TypeError)
        if not self.batch_first:
            _heads.fail(_LAYER, "query", "a regular tensor when batch_first=False", _heads.describe(query),
                        "nested tensors are batch-major: build the layer with batch_first=True", TypeError)
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is not None:
                _heads.fail(_LAYER, name, "None with nested inputs (their lengths are the padding)",
                            _heads.describe(mask), hint)
        return True

    def _forward_nested(self, x: Tensor, need_weights: bool, average_attn_weights: bool,
                        is_causal: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """Self-attention over nested ``x``: padded, run with the padding as key_padding_mask, nested again.

        Padding sits at the end of each sequence, so causal masking is per sequence. Weights of
        padded query rows are zeroed, as PyTorch's nested path returns them.
        """
        lengths = _nested_lengths(x, self.embed_dim)
        padded = torch.nested.to_padded_tensor(x, 0.0)
        positions = torch.arange(padded.shape[1], device=padded.device)
        padding = positions >= torch.tensor(lengths, device=padded.device)[:, None]
        out, weights = self.forward(padded, padded, padded, key_padding_mask=padding, need_weights=need_weights,
                                    average_attn_weights=average_attn_weights, is_causal=is_causal)
        out = torch.nested.as_nested_tensor([row[:n] for row, n in zip(out, lengths)], layout=x.layout)
        if weights is not None:
            padded_rows = padding[:, :, None] if average_attn_weights else padding[:, None, :, None]
            weights = weights.masked_fill(padded_rows, 0.0)
        return out, weights

    # ---- input checks and layout -------------------------------------------------------------

    def _check_inputs(self, query, key, value) -> bool:
        """Check shapes and widths; return whether the inputs are batched (3-D)."""
        layout = "(B, L, E)" if self.batch_first else "(L, B, E)"
        _heads.check_features(_LAYER, "query", query, (2, 3), self.embed_dim, f"{layout} or unbatched (L, E)")
        _heads.check_features(_LAYER, "key", key, (query.dim(),), self.kdim, f"{query.dim()}-D like query")
        _heads.check_features(_LAYER, "value", value, (query.dim(),), self.vdim, f"{query.dim()}-D like query")
        if key.shape[:-1] != value.shape[:-1]:
            _heads.fail(_LAYER, "value", f"of key's (sequence, batch) shape {tuple(key.shape[:-1])}",
                        tuple(value.shape), "key and value come in pairs")
        batch_dim = 0 if self.batch_first else 1
        if query.dim() == 3 and query.shape[batch_dim] != key.shape[batch_dim]:
            _heads.fail(_LAYER, "key", f"batch size {query.shape[batch_dim]} like query (dim {batch_dim})",
                        key.shape[batch_dim], f"batch_first={self.batch_first}: check the input layout")
        return query.dim() == 3

    def _batch_major(self, x: Tensor, batched: bool) -> Tensor:
        """Any accepted input layout as ``(B, T, features)``."""
        if not batched:
            return x.unsqueeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _restore_layout(self, x: Tensor, batched: bool) -> Tensor:
        if not batched:
            return x.squeeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _checked_key_padding_mask(self, mask: Optional[Tensor], batched: bool, B: int, S: int) -> Optional[Tensor]:
        """The mask as ``(B, S)``."""
        if mask is None:
            return None
        _check_mask_type("key_padding_mask", mask)
        expected = (B, S) if batched else (S,)
        if tuple(mask.shape) != expected:
            _heads.fail(_LAYER, "key_padding_mask", f"of shape {'(B, S)' if batched else '(S,)'} = {expected}",
                        tuple(mask.shape), "one entry per key (True = padding) and batch row")
        return mask if batched else mask.unsqueeze(0)

    def _check_attn_mask(self, mask: Optional[Tensor], B: int, L: int, S: int) -> None:
        if mask is None:
            return
        _check_mask_type("attn_mask", mask)
        shape = tuple(mask.shape)
        # Two comparisons, not `shape in (...)`: under torch.compile with a dynamic length dynamo
        # evaluates that membership test as False for a static-shaped mask.
        if shape != (L, S) and shape != (B * self.num_heads, L, S):
            _heads.fail(_LAYER, "attn_mask", f"of shape (L, S) = {(L, S)} or (B * num_heads, L, S) = "
                        f"{(B * self.num_heads, L, S)}", shape,
                        "L is the query length and S the key length; per-head masks stack batch-major")

    # ---- projection and paths ----------------------------------------------------------------

    def _project(self, query: Tensor, key: Tensor, value: Tensor, self_attention: bool):
        """Batch-major inputs to heads q ``(B, H, L, D)``, k, v ``(B, H, S, D)``."""
        if self_attention and self._qkv_same_embed_dim:
            projected = _heads.packed_projection(query, self.in_proj_weight, self.in_proj_bias)
        else:
            weights = (self.in_proj_weight.chunk(3) if self._qkv_same_embed_dim
                       else (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight))
            biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
            projected = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
        return tuple(_heads.split_heads(x, self.num_heads) for x in projected)

    def _append_extra_keys(self, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor, int]:
        """Append ``bias_k``/``bias_v`` and the zero key/value (as PyTorch); return their count."""
        B, H, _, D = k.shape
        extra_k, extra_v = [], []
        if self.bias_k is not None:
            extra_k.append(self.bias_k.view(1, H, 1, D).expand(B, H, 1, D))
            extra_v.append(self.bias_v.view(1, H, 1, D).expand(B, H, 1, D))
        if self.add_zero_attn:
            extra_k.append(k.new_zeros(B, H, 1, D))
            extra_v.append(v.new_zeros(B, H, 1, D))
        if not extra_k:
            return k, v, 0
        return torch.cat([k, *extra_k], dim=2), torch.cat([v, *extra_v], dim=2), len(extra_k)

    @staticmethod
    def _fused_path_applies(need_weights: bool, attn_mask: Optional[Tensor], causal: Optional[str], n_extra: int,
                            L: int, S: int) -> bool:
        if need_weights:
            return False
        if causal is not None:
            return n_extra == 0 and L <= S
        return attn_mask is None

    def _fused_attention(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                         causal: Optional[str], n_extra: int) -> Tensor:
        """One ``masked_sdpa`` call; ``causal`` is None or the alignment of the causal mask."""
        key_padding_mask, key_bias = _operator_key_masks(key_padding_mask, n_extra)
        if causal == "top_left":
            # Query i sees keys j <= i < L, so keys from L on are unseen; on the first L keys the
            # top-left mask is the operator's bottom-right one.
            L = q.shape[2]
            k, v = k[:, :, :L], v[:, :, :L]
            key_padding_mask, key_bias = (None if m is None else m[:, :L] for m in (key_padding_mask, key_bias))
        return masked_sdpa(q, k, v, key_padding_mask=key_padding_mask, key_bias=key_bias, causal=causal is not None,
                           dropout_p=_heads.dropout_p(self), backend=self.backend)

    @staticmethod
    def _dense_bias(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], causal: Optional[str], q: Tensor,
                    S: int, n_extra: int) -> Optional[Tensor]:
        """Additive scores broadcastable to ``(B, H, L, S + n_extra)`` for q ``(B, H, L, D)``.

        The ``n_extra`` appended keys (``bias_k``, zero key) are never masked, as in PyTorch.
        """
        B, H, L, _ = q.shape
        if attn_mask is None and causal is not None:
            attn_mask = _causal_mask(L, S, causal, q.device)
        bias = None
        if attn_mask is not None:
            bias = _additive(attn_mask, q.dtype)
            bias = bias.view(1, 1, L, S) if bias.dim() == 2 else bias.view(B, H, L, S)
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, q.dtype).view(B, 1, 1, S)
            bias = padding if bias is None else bias + padding
        return None if bias is None else F.pad(bias, (0, n_extra))

    @staticmethod
    def _format_weights(weights: Optional[Tensor], need_weights: bool, average: bool, batched: bool):
        if not need_weights:
            return None
        if average:
            weights = weights.mean(dim=1)
        return weights if batched else weights.squeeze(0)
