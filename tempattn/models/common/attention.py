"""Attention weights for monitoring: :func:`get_attention_weights` (the designs' monitoring hook).

``get_attention_weights(model, *inputs, **kw)`` runs ``model(*inputs, **kw)`` once in eval mode
without gradients, records the inputs of every attention layer it calls, and recomputes each
layer's per-head weights on the dense reference path:

- :class:`tempattn.nn.MultiheadAttention`: the layer itself with ``need_weights=True,
  average_attn_weights=False`` (its dense path);
- :class:`tempattn.nn.CausalSelfAttention`, :class:`~tempattn.nn.RelativeTemporalAttention`,
  :class:`~tempattn.nn.MultiScaleDecayAttention`: the scores, score modifiers and admissibility of the
  operators' dense references (``tempattn.ops.*.reference``), normalised with the reference's
  log-sum-exp.

Returns ``{layer name: (B, H, Tq, Tk) float tensor}`` (the name of the module in ``model``; a
layer called more than once gets ``name#1``, ``name#2``, ...). Rows sum to 1 over the admissible
keys (0 for a row with none); ``weights @ V`` (the layer's value heads) merged and projected by
``out_proj`` is the layer's output. Calls with a decoding cache are not recorded.
"""
import math
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ...nn import CausalSelfAttention, MultiheadAttention, MultiScaleDecayAttention, RelativeTemporalAttention
from ...ops.common.reference import admissible_mask, attention_reference, position_offsets
from ...ops.decay_attention.reference import decay_offsets, decay_score_mod

__all__ = ["get_attention_weights", "ATTENTION_LAYERS", "causal_layer_weights"]

ATTENTION_LAYERS = (MultiheadAttention, CausalSelfAttention, RelativeTemporalAttention, MultiScaleDecayAttention)


def causal_layer_weights(layer: nn.Module, x: Tensor, key_padding_mask=None, categories=None,
                         times=None) -> Tuple[Tensor, Tensor]:
    """``(weights (B, H, T, T), values (B, H, T, D))`` of a tempattn causal self-attention layer on ``x``."""
    q, k, v = layer._project(x, key_padding_mask)
    T = q.shape[2]
    key_valid = None if key_padding_mask is None else ~key_padding_mask
    score_mod, key_bias, window = None, None, None
    if isinstance(layer, RelativeTemporalAttention):
        window = layer.window
        index = position_offsets(T, T, q.device).clamp(0, layer.rel_bias.shape[1] - 1)
        score_mod = layer.rel_bias[:, index].unsqueeze(0)
        key_bias = layer._category_key_bias(categories, x)
    elif isinstance(layer, MultiScaleDecayAttention):
        window = layer.window
        log_gamma = torch.log(layer.gamma())
        score_mod = decay_score_mod(log_gamma, layer.alpha_logits, decay_offsets(times, T, T, q.device,
                                                                                  log_gamma.dtype), layer.eps)
    admissible = admissible_mask(key_valid, T, T, q.device, causal=True, window=window)
    scale = 1.0 / math.sqrt(q.shape[-1])
    _, lse = attention_reference(q, k, v, scale=scale, admissible=admissible, score_mod=score_mod, key_bias=key_bias)
    acc = lse.dtype
    s = scale * torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2))
    if key_bias is not None:
        s = s + key_bias.to(acc)[:, :, None, :]
    if score_mod is not None:
        s = s + score_mod.to(acc)
    finite = torch.isfinite(lse)[..., None]
    weights = torch.where(admissible & finite, torch.exp(s - torch.where(finite, lse[..., None], 0.0)), 0.0)
    return weights, v


def get_attention_weights(model: nn.Module, *inputs: Any, **kwargs: Any) -> Dict[str, Tensor]:
    """Per-head attention weights of every attention layer ``model(*inputs, **kwargs)`` calls (see the module doc)."""
    names = {module: name for name, module in model.named_modules() if isinstance(module, ATTENTION_LAYERS)}
    calls: List[Tuple[nn.Module, tuple, dict]] = []

    def record(module, args, kw):
        if kw.get("cache") is None:
            calls.append((module, args, dict(kw)))

    handles = [module.register_forward_pre_hook(record, with_kwargs=True) for module in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    weights: Dict[str, Tensor] = {}
    seen: Dict[str, int] = {}
    try:
        with torch.no_grad():
            for module, args, kw in calls:
                if isinstance(module, MultiheadAttention):
                    kw = {**kw, "need_weights": True, "average_attn_weights": False}
                    value = module(*args, **kw)[1]
                else:
                    x = args[0] if args else kw.pop("x")
                    kw.pop("seed", None)
                    value = causal_layer_weights(module, x, **kw)[0]
                name = names[module]
                count = seen.get(name, 0)
                seen[name] = count + 1
                if count == 1:
                    weights[f"{name}#0"] = weights.pop(name)
                weights[name if count == 0 else f"{name}#{count}"] = value.float()
    finally:
        model.train(was_training)
    return weights
