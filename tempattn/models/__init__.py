"""Model families built from :mod:`tempattn.nn` layers (docs/models.md).

``create_model(name, **kw)`` builds one by name; ``model_names()`` lists the names. Each family
lives in its own subpackage with the same files: ``model.py`` (the modules), ``data.py`` (a
seeded synthetic generator with known ground truth, and the real dataset from the registries),
``train.py`` (training loop, metrics, and ``main(argv)`` for ``python -m tempattn.models``).

=================  =============================================================================
name               what
=================  =============================================================================
gpcm               knowledge tracing: relative temporal attention + DKVMN memory + GPCM heads
attention_gpcm     its baseline with plain causal attention
migt_tvdt          multivariate forecasting with non-crossing quantile heads
kolosis            three-stream language model (concept, semantic, temporal decay stream)
kolosis_baseline   kolosis without the temporal stream
kolosis_plain      control: an equal-size plain-attention third stream instead of the decay stream
kolosis_relpos     control: the baseline with learned relative positions (T5-style) in its attentions
char_lm            causal character language model
char_lstm          its LSTM baseline
tsa                fraud classifier on event sequences
tsa_gated          the two-sequence gated variant
=================  =============================================================================

Train one on real data: ``python -m tempattn.models <name> [--help]``.
"""
import importlib
from typing import Dict, List, Tuple

from torch import nn

__all__ = ["create_model", "model_names", "ALIASES"]

# name -> (family subpackage, builder function in it)
_REGISTRY: Dict[str, Tuple[str, str]] = {
    "gpcm": ("gpcm", "build_gpcm"),
    "attention_gpcm": ("gpcm", "build_attention_gpcm"),
    "migt_tvdt": ("migt_tvdt", "build_migt_tvdt"),
    "kolosis": ("kolosis", "build_kolosis"),
    "kolosis_baseline": ("kolosis", "build_kolosis_baseline"),
    "kolosis_plain": ("kolosis", "build_kolosis_plain"),
    "kolosis_relpos": ("kolosis", "build_kolosis_relpos"),
    "char_lm": ("char_lm", "build_char_lm"),
    "char_lstm": ("char_lm", "build_char_lstm"),
    "tsa": ("tsa", "build_tsa"),
    "tsa_gated": ("tsa", "build_tsa_gated"),
}


# the designs' names -> (our name, {their keyword: ours}); create_model accepts both spellings
ALIASES: Dict[str, Tuple[str, Dict[str, str]]] = {
    "stable_temporal_attn_gpcm": ("gpcm", {"n_questions": "n_items", "n_cats": "n_categories",
                                           "temporal_window": "window", "n_heads": "num_heads",
                                           "dropout_rate": "dropout"}),
}


def model_names() -> List[str]:
    return list(_REGISTRY)


def family_of(name: str) -> str:
    """The subpackage (``tempattn.models.<family>``) that builds and trains ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"create_model: unknown model name {name!r}; expected one of {model_names()}")
    return _REGISTRY[name][0]


def create_model(name: str, **kw) -> nn.Module:
    """Build the model ``name`` (see :func:`model_names`) with the family's keyword arguments.

    The designs' names in :data:`ALIASES` work too, with their keywords mapped onto ours, e.g.
    ``create_model('stable_temporal_attn_gpcm', n_questions=50, n_cats=4, temporal_window=5, embed_dim=64,
    n_heads=4, dropout_rate=0.1)`` is ``create_model('gpcm', n_items=50, n_categories=4, window=5, embed_dim=64,
    num_heads=4, dropout=0.1)``.
    """
    if isinstance(name, str) and name in ALIASES:
        name, renames = ALIASES[name]
        for theirs, ours in renames.items():
            if theirs in kw:
                if ours in kw:
                    raise TypeError(f"create_model: got both {theirs!r} and {ours!r}; hint: pass one of them")
                kw[ours] = kw.pop(theirs)
    family, builder = _REGISTRY[name] if name in _REGISTRY else (family_of(name), None)
    module = importlib.import_module(f"{__name__}.{family}")
    return getattr(module, builder)(**kw)
