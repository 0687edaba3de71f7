"""Swap torch.nn.MultiheadAttention for tempattn.nn.MultiheadAttention in an existing model.

A small model built on torch's own ``nn.TransformerEncoder`` gets every attention layer replaced
by the drop-in, weights carried over with ``load_state_dict(strict=True)``. The swapped model
gives the same outputs in training and evaluation mode, runs tempattn's fused attention inside
torch's Transformer modules, and differs only where documented: a sequence whose keys are all
padding gets zeros instead of NaN.

Run: ``python examples/swap_multihead_attention.py`` (a few seconds on a CPU).
"""
import copy

import torch
from torch import nn

import tempattn
from tempattn import nn as tnn


class TinyClassifier(nn.Module):
    """An existing model: token embedding, torch's Transformer encoder, mean pooling, a linear head."""

    def __init__(self, vocab: int = 50, d_model: int = 32, nhead: int = 4, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 2)

    def forward(self, ids, padding_mask):  # padding_mask: (B, T) bool, True = padding
        h = self.encoder(self.embed(ids), src_key_padding_mask=padding_mask)
        keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1))


def swap_attention(model: nn.Module) -> nn.Module:
    """Replace every torch.nn.MultiheadAttention in ``model`` (in place) by tempattn's drop-in."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.MultiheadAttention:
                new = tnn.MultiheadAttention(
                    child.embed_dim, child.num_heads, dropout=child.dropout, bias=child.in_proj_bias is not None,
                    add_bias_kv=child.bias_k is not None, add_zero_attn=child.add_zero_attn,
                    kdim=child.kdim, vdim=child.vdim, batch_first=child.batch_first,
                    device=child.out_proj.weight.device, dtype=child.out_proj.weight.dtype)
                new.load_state_dict(child.state_dict(), strict=True)  # same parameter names and shapes
                setattr(parent, name, new)
    return model


def main():
    torch.manual_seed(0)
    original = TinyClassifier()
    swapped = swap_attention(copy.deepcopy(original))
    n_swapped = sum(isinstance(m, tnn.MultiheadAttention) for m in swapped.modules())
    print(f"swapped {n_swapped} attention layers; backends here: "
          f"{[b for b, s in tempattn.backends().items() if s['available']]}")

    B, T = 4, 12
    ids = torch.randint(0, 50, (B, T))
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, 8:] = True          # a shorter sequence
    padding[2, 3:] = True

    # 1. Training mode: identical outputs and gradients (dropout is 0 here; with dropout > 0 the
    #    random streams differ: tempattn draws its keep mask with Philox).
    original.train(), swapped.train()
    out_torch, out_ours = original(ids, padding), swapped(ids, padding)
    torch.testing.assert_close(out_ours, out_torch, rtol=1e-4, atol=1e-5)
    out_torch.sum().backward()
    out_ours.sum().backward()
    torch.testing.assert_close(swapped.embed.weight.grad, original.embed.weight.grad, rtol=1e-4, atol=1e-5)

    # 2. Evaluation without autograd: torch would run its native fused encoder-layer kernel here.
    #    The drop-in carries a no-op forward pre-hook, so torch keeps calling its forward and
    #    tempattn's attention runs in this mode too. Outputs still match.
    original.eval(), swapped.eval()
    with torch.inference_mode():
        torch.testing.assert_close(swapped(ids, padding), original(ids, padding), rtol=1e-4, atol=1e-5)

    # 3. A causal mask, as torch spells it: the fused path recognises the square causal mask.
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    x = torch.randn(B, T, 32)
    with torch.no_grad():
        ref = original.encoder(x, mask=mask, is_causal=True)
        ours = swapped.encoder(x, mask=mask, is_causal=True)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)

    # 4. The documented difference: a query with no admissible key. Here every key of sequence 3
    #    is padding. tempattn returns zeros for those rows (the model's output stays finite);
    #    torch's attention returns NaN for them on some of its paths.
    padding[3] = True
    layer_torch = original.encoder.layers[0].self_attn
    layer_ours = swapped.encoder.layers[0].self_attn
    h = torch.randn(B, T, 32)
    with torch.no_grad():
        a_torch, _ = layer_torch(h, h, h, key_padding_mask=padding)  # need_weights=True: the dense path
        a_ours, _ = layer_ours(h, h, h, key_padding_mask=padding)
    assert torch.equal(a_ours[3], layer_ours.out_proj.bias.expand(T, -1))  # zero attention, then out_proj
    torch.testing.assert_close(a_ours[:3], a_torch[:3], rtol=1e-4, atol=1e-5)
    print(f"fully padded sequence: torch NaN? {bool(a_torch[3].isnan().any())}; "
          f"tempattn finite? {bool(a_ours[3].isfinite().all())}")

    # 5. Speed: ask for no weights. need_weights=True (torch's default) materialises the (B, H, L, S)
    #    weights on the dense path; need_weights=False takes one fused masked_sdpa call.
    with torch.no_grad():
        fused, none = layer_ours(h, h, h, key_padding_mask=padding, need_weights=False)
    assert none is None
    torch.testing.assert_close(fused, a_ours, rtol=1e-4, atol=1e-5)
    print("ok: the swapped model matches torch's")


if __name__ == "__main__":
    main()
