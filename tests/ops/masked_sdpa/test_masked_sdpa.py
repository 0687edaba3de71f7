"""masked_sdpa specifics: agreement with PyTorch's own SDPA conventions."""
import torch
import torch.nn.functional as F

import tempattn


def test_key_valid_mask_means_what_sdpa_bool_mask_means(backend):
    q, k, v = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 14, 16), torch.randn(2, 3, 14, 8)
    valid = torch.rand(2, 14) > 0.3
    valid[:, 0] = True
    ours = tempattn.masked_sdpa(q, k, v, key_valid_mask=valid, backend=backend)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_causal_matches_sdpa_is_causal_for_square_inputs(backend):
    q, k, v = (torch.randn(2, 2, 33, 24) for _ in range(3))
    ours = tempattn.masked_sdpa(q, k, v, causal=True, backend=backend)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-5, atol=1e-5)


def test_bottom_right_alignment_makes_incremental_decoding_exact(backend):
    q, k, v = (torch.randn(1, 2, 12, 16) for _ in range(3))
    full = tempattn.masked_sdpa(q, k, v, causal=True, backend=backend)
    for t in range(12):
        step = tempattn.masked_sdpa(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], causal=True, backend=backend)
        torch.testing.assert_close(step[:, :, 0], full[:, :, t], rtol=1e-5, atol=1e-6)


def test_key_bias_shapes_agree(backend):
    q, k, v = (torch.randn(2, 3, 9, 16) for _ in range(3))
    bias = torch.randn(2, 9)
    two_d = tempattn.masked_sdpa(q, k, v, key_bias=bias, backend=backend)
    three_d = tempattn.masked_sdpa(q, k, v, key_bias=bias[:, None].expand(2, 3, 9), backend=backend)
    torch.testing.assert_close(two_d, three_d)
