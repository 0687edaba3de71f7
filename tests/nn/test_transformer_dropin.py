"""tempattn.nn.MultiheadAttention as the attention of torch's nn.Transformer* modules.

Each test builds a torch module, swaps in our attention carrying the same weights (strict
state_dict both ways) and checks, in every mode, that the output (and in autograd modes the
gradients) equal the unswapped module's and that every attention call ran through our layer:
torch's native fused kernels are made to fail, and our two attention paths are counted.
"""
import contextlib
import copy

import pytest
import torch

import tempattn.nn as tnn
from tempattn.nn import multihead

E, H, FF, B, T, T_TGT = 8, 2, 16, 3, 5, 4
LENGTHS = (T, 3, 1)  # valid tokens first (left-aligned, as TransformerEncoder's nested conversion wants)

# name -> (train mode?, context): the modes torch's fast-path checks distinguish
MODES = {
    "train": (True, contextlib.nullcontext),
    "eval": (False, contextlib.nullcontext),
    "eval_no_grad": (False, torch.no_grad),
    "inference_mode": (False, torch.inference_mode),
}
# Encoder mask kinds, as forward kwargs of TransformerEncoder (TransformerEncoderLayer names the mask src_mask).
ENCODER_MASKS = ["none", "padding", "padding_float", "causal", "causal_bool", "causal_padding", "float"]
TOLERANCE = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 2e-5, "rtol": 2e-5}}

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")


def swap_attention(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with each torch MultiheadAttention replaced by ours, built alike and loading its weights."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.MultiheadAttention):
                ours = tnn.MultiheadAttention(
                    child.embed_dim, child.num_heads, dropout=child.dropout, bias=child.in_proj_bias is not None,
                    add_bias_kv=child.bias_k is not None, add_zero_attn=child.add_zero_attn, kdim=child.kdim,
                    vdim=child.vdim, batch_first=child.batch_first, dtype=child.out_proj.weight.dtype)
                ours.load_state_dict(child.state_dict(), strict=True)
                setattr(parent, name, ours)
    return module


def make_pair(build):
    """(torch's module, a copy with our attention), same weights; the copy loads torch's state_dict strictly."""
    ref = build()
    ours = swap_attention(copy.deepcopy(ref))
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in ours.modules())
    return ref, ours


def count_attention_calls(monkeypatch) -> dict:
    """Count our layer's fused and dense attention calls; make torch's native fused kernels raise.

    Install after running the torch reference: from then on only our attention may run.
    """
    calls = {"fused": 0, "dense": 0}
    for path, name in (("fused", "masked_sdpa"), ("dense", "_dense_attention")):
        monkeypatch.setattr(multihead, name, _counting(getattr(multihead, name), calls, path))
    for native in ("_transformer_encoder_layer_fwd", "_native_multi_head_attention"):
        monkeypatch.setattr(torch, native, _native_kernel_called)
    return calls


def _counting(function, calls: dict, path: str):
    def counted(*args, **kwargs):
        calls[path] += 1
        return function(*args, **kwargs)
    return counted


def _native_kernel_called(*args, **kwargs):
    raise AssertionError("torch's native fused attention ran instead of tempattn's")


def gradients(module, leaves) -> dict:
    """Gradients of the inputs and of every parameter, by name."""
    grads = {f"input{i}": x.grad for i, x in enumerate(leaves)}
    return {**grads, **{name: p.grad for name, p in module.named_parameters()}}


def assert_same_gradients(got: dict, expected: dict, **tolerance) -> None:
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        torch.testing.assert_close(got[name], want, **tolerance, msg=lambda m: f"{name}: {m}")


def padding(T_keys: int = T, dtype=None) -> torch.Tensor:
    """(B, T_keys) padding mask from LENGTHS, bool (True = padding) or additive float (0 / -inf)."""
    mask = torch.arange(T_keys)[None, :] >= torch.tensor(LENGTHS)[:, None]
    return mask if dtype is None else torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, float("-inf"))


def encoder_masks(kind: str, dtype) -> dict:
    """TransformerEncoder forward kwargs; ``causal`` is torch's documented recipe."""
    causal = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=dtype)
    return {
        "none": {},
        "padding": {"src_key_padding_mask": padding()},
        "padding_float": {"src_key_padding_mask": padding(dtype=dtype)},
        "causal": {"mask": causal, "is_causal": True},
        "causal_bool": {"mask": torch.isneginf(causal)},
        "causal_padding": {"mask": causal, "is_causal": True, "src_key_padding_mask": padding(dtype=dtype)},
        "float": {"mask": torch.randn(T, T, dtype=dtype)},
    }[kind]


def layout(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """A (B, T, E) tensor in the module's layout."""
    return x if batch_first else x.transpose(0, 1).contiguous()


@contextlib.contextmanager
def torch_fast_path_disabled():
    """Run torch's module-by-module path: its native encoder-layer kernel returns NaN for an arbitrary
    float attention mask (torch 2.13 on CPU), so that mask's reference comes from the plain path."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def output_and_gradients(module, inputs, kwargs, context=contextlib.nullcontext):
    """``module(*inputs, **kwargs)`` under ``context()`` and, if autograd recorded it, the gradients (else None)."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    with context():
        out = module(*leaves, **kwargs)
    if not out.requires_grad:
        return out, None
    out.square().sum().backward()
    return out, gradients(module, leaves)


def run_and_compare(ref, ours, inputs, kwargs, mode, monkeypatch, expected_calls, dtype, arbitrary_mask=False):
    """Run both modules in ``mode``; compare outputs and, in the autograd modes, gradients.

    ``expected_calls``: {"fused": n, "dense": m} attention calls of one forward of ``ours``.
    ``arbitrary_mask``: the kwargs hold an arbitrary float attention mask (see torch_fast_path_disabled).
    """
    train, context = MODES[mode]
    ref.train(train)
    ours.train(train)
    with torch_fast_path_disabled() if arbitrary_mask else contextlib.nullcontext():
        expected, expected_grads = output_and_gradients(ref, inputs, kwargs, context)
    calls = count_attention_calls(monkeypatch)
    got, got_grads = output_and_gradients(ours, inputs, kwargs, context)
    assert calls == expected_calls
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])
    assert (got_grads is None) == (expected_grads is None) == (mode not in ("train", "eval"))
    if got_grads is not None:
        assert_same_gradients(got_grads, expected_grads, **TOLERANCE[dtype])


def encoder_layer(batch_first, norm_first, dtype):
    return torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first,
                                            dtype=dtype)


def encoder_call(model_name, masks):
    """The masks as the forward kwargs of a TransformerEncoder or of a single TransformerEncoderLayer."""
    if model_name == "encoder_layer" and "mask" in masks:
        masks = {("src_mask" if k == "mask" else k): v for k, v in masks.items()}
    return masks


ENCODERS = {  # name -> (build(batch_first, norm_first, dtype), attention modules)
    "encoder_layer": (encoder_layer, 1),
    "encoder": (lambda bf, nf, dtype: torch.nn.TransformerEncoder(encoder_layer(bf, nf, dtype), num_layers=2), 2),
}


def check_encoder(model_name, mode, batch_first, norm_first, mask_kind, dtype, monkeypatch):
    build, n_attention = ENCODERS[model_name]
    ref, ours = make_pair(lambda: build(batch_first, norm_first, dtype))
    src = layout(torch.randn(B, T, E, dtype=dtype), batch_first)
    dense = n_attention if mask_kind == "float" else 0  # an arbitrary float mask needs the dense path
    run_and_compare(ref, ours, [src], encoder_call(model_name, encoder_masks(mask_kind, dtype)), mode, monkeypatch,
                    {"fused": n_attention - dense, "dense": dense}, dtype, arbitrary_mask=mask_kind == "float")


@pytest.mark.parametrize("mask_kind", ENCODER_MASKS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("model_name", list(ENCODERS))
def test_encoder_matches_torch_float64(model_name, mode, batch_first, norm_first, mask_kind, monkeypatch):
    """Issue 8: every mode, layout, norm placement and mask kind, in float64 with tight tolerance."""
    check_encoder(model_name, mode, batch_first, norm_first, mask_kind, torch.float64, monkeypatch)


@pytest.mark.parametrize("mask_kind", ENCODER_MASKS)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("model_name", list(ENCODERS))
def test_encoder_matches_torch_float32(model_name, mode, mask_kind, monkeypatch):
    """The common inference setup (batch_first, float32), where torch's fast path would otherwise run."""
    check_encoder(model_name, mode, True, False, mask_kind, torch.float32, monkeypatch)


def transformer_masks(kind: str, dtype) -> dict:
    return {
        "none": {},
        "padding": {"src_key_padding_mask": padding(T, dtype), "tgt_key_padding_mask": padding(T_TGT, dtype),
                    "memory_key_padding_mask": padding(T, dtype)},
        "causal": {"tgt_mask": torch.nn.Transformer.generate_square_subsequent_mask(T_TGT, dtype=dtype),
                   "tgt_is_causal": True},
        "float": {"src_mask": torch.randn(T, T, dtype=dtype)},
    }[kind]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "float"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("mode", list(MODES))
def test_transformer_matches_torch(mode, batch_first, mask_kind, dtype, monkeypatch):
    """nn.Transformer: encoder self_attn, decoder self_attn and multihead_attn (cross-attention) all swapped."""
    ref, ours = make_pair(lambda: torch.nn.Transformer(E, H, num_encoder_layers=2, num_decoder_layers=1,
                                                       dim_feedforward=FF, dropout=0.0, batch_first=batch_first,
                                                       dtype=dtype))
    src, tgt = (layout(torch.randn(B, n, E, dtype=dtype), batch_first) for n in (T, T_TGT))
    dense = 2 if mask_kind == "float" else 0  # src_mask reaches the two encoder layers
    run_and_compare(ref, ours, [src, tgt], transformer_masks(mask_kind, dtype), mode, monkeypatch,
                    {"fused": 4 - dense, "dense": dense}, dtype, arbitrary_mask=mask_kind == "float")


def test_encoder_nested_fast_path_feeds_our_layer_nested_tensors(monkeypatch):
    """Eval without autograd plus a padding mask: TransformerEncoder converts src to a nested tensor.

    Our layer then sees nested tensors (its use_nested_tensor checks pass) and must handle them;
    the padded positions of the result are zeros, as with torch's own layers. Here the encoder is
    built from a layer already holding our attention, so its layers are deep copies of ours.
    """
    layer = encoder_layer(True, False, torch.float32)
    ref = torch.nn.TransformerEncoder(layer, num_layers=2)
    ours = torch.nn.TransformerEncoder(swap_attention(copy.deepcopy(layer)), num_layers=2)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.use_nested_tensor
    nested_inputs = []
    real_forward = multihead.MultiheadAttention._forward_nested
    monkeypatch.setattr(multihead.MultiheadAttention, "_forward_nested",
                        lambda self, x, *a: nested_inputs.append(x.layout) or real_forward(self, x, *a))
    run_and_compare(ref, ours, [torch.randn(B, T, E)], {"src_key_padding_mask": padding()}, "eval_no_grad",
                    monkeypatch, {"fused": 2, "dense": 0}, torch.float32)
    assert nested_inputs == [torch.strided, torch.strided]


class SelfAttention(torch.nn.Module):
    """Our layer as a function of ``x`` alone, with fixed masks."""

    def __init__(self, **masks):
        super().__init__()
        self.attention = tnn.MultiheadAttention(E, H, batch_first=True)
        self.masks = masks

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False, **self.masks)[0]


def compare_compiled(eager, compiled, inputs, kwargs, monkeypatch, **tolerance):
    """``compiled`` (a copy of ``eager``) under torch.compile(fullgraph=True) against ``eager``, with gradients.

    Module.compile keeps the parameter names; the spies count while dynamo traces, once.
    """
    expected, expected_grads = output_and_gradients(eager, inputs, kwargs)
    calls = count_attention_calls(monkeypatch)
    compiled.compile(fullgraph=True)
    got, got_grads = output_and_gradients(compiled, inputs, kwargs)
    assert calls == {"fused": 1, "dense": 0}
    torch.testing.assert_close(got, expected, **tolerance)
    assert_same_gradients(got_grads, expected_grads, **tolerance)


@pytest.mark.parametrize("case", ["padding", "padding_float", "causal", "causal_padding"])
def test_compiled_layer_forward_backward(case, monkeypatch):
    """The layer alone under torch.compile(fullgraph=True): outputs and gradients as in eager, on the fused path."""
    masks = {
        "padding": {"key_padding_mask": padding()},
        "padding_float": {"key_padding_mask": padding(dtype=torch.float32)},
        "causal": {"is_causal": True},
        "causal_padding": {"is_causal": True, "key_padding_mask": padding()},
    }[case]
    eager = SelfAttention(**masks)
    compare_compiled(eager, copy.deepcopy(eager), [torch.randn(B, T, E)], {}, monkeypatch, atol=1e-5, rtol=1e-5)


def test_compiled_encoder_layer_forward_backward(monkeypatch):
    """TransformerEncoderLayer with our attention under torch.compile(fullgraph=True), causal with padding,
    against torch's layer.

    The masks share a dtype: torch's layer warns (a graph break) when a bool padding mask meets a float mask.
    """
    ref, ours = make_pair(lambda: encoder_layer(True, False, torch.float32))
    kwargs = encoder_call("encoder_layer", encoder_masks("causal_padding", torch.float32))
    compare_compiled(ref, ours, [torch.randn(B, T, E)], kwargs, monkeypatch, atol=2e-5, rtol=2e-5)
