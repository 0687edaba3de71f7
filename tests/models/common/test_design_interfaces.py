"""The designs' interfaces: the documented gpcm factory call, get_attention_weights on the attention-based
families (checked against each layer's own output: weights @ V, merged and projected, is the output), migt's
5 horizons x 7 quantiles, and the CLI's usage errors."""
import pytest
import torch

from tempattn.models import __main__ as models_cli
from tempattn.models import create_model
from tempattn.models.common.attention import causal_layer_weights
from tempattn.models.gpcm import GPCMKnowledgeTracer
from tempattn.models.migt_tvdt import MIGTTVDT
from tempattn.models.migt_tvdt.train import _parser as migt_parser
from tempattn.models.tsa import data as tsa_data
from tempattn.nn import MultiheadAttention
from tempattn.nn._heads import merge_heads


def test_the_documented_gpcm_factory_call():
    torch.manual_seed(0)
    model = create_model('stable_temporal_attn_gpcm', n_questions=50, n_cats=4, temporal_window=5, embed_dim=64,
                         n_heads=4, dropout_rate=0.1)
    torch.manual_seed(0)
    ours = create_model("gpcm", n_items=50, n_categories=4, window=5, embed_dim=64, num_heads=4, dropout=0.1)
    assert isinstance(model, GPCMKnowledgeTracer) and (model.n_items, model.n_categories) == (50, 4)
    assert model.mixer.attention.window == 5 and model.mixer.attention.num_heads == 4
    assert repr(model) == repr(ours)
    for (name, a), (_, b) in zip(model.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="both 'n_cats' and 'n_categories'"):
        create_model('stable_temporal_attn_gpcm', n_cats=4, n_categories=4)


def _inputs(name):
    g = torch.Generator().manual_seed(0)
    if name in ("gpcm", "attention_gpcm"):
        model = create_model(name, n_items=12, n_categories=3, embed_dim=16, num_heads=2, backend="cpu")
        items, responses = torch.randint(12, (3, 9), generator=g), torch.randint(3, (3, 9), generator=g)
        padding = torch.arange(9) >= torch.tensor([9, 6, 4])[:, None]
        return model, (items, responses, padding)
    if name == "char_lm":
        model = create_model(name, vocab_size=11, context=16, embed_dim=16, num_heads=2, num_layers=2, backend="cpu")
        return model, (torch.randint(11, (2, 10), generator=g),)
    if name == "kolosis":
        model = create_model(name, vocab_size=11, context=16, embed_dim=16, num_heads=2, num_layers=1, n_concepts=3,
                             backend="cpu")
        return model, (torch.randint(11, (2, 10), generator=g),)
    if name == "migt_tvdt":
        model = create_model(name, n_vars=3, d_model=16, n_heads=2, n_layers=1, backend="cpu")
        x = torch.randn(2, 8, 3, generator=g)
        stamps = 1_600_000_000 + 86_400 * torch.arange(8).repeat(2, 1)
        return model, (x, stamps, torch.arange(8) >= torch.tensor([8, 5])[:, None])
    dataset = tsa_data.make_synthetic(tsa_data.SyntheticConfig(n_accounts=8, with_peer=name == "tsa_gated"), seed=0)
    model = create_model(name, **dataset.spec.model_kwargs(), d_model=16, n_heads=2, expert_hidden=16)
    return model, (dataset.events[:4],) if name == "tsa" else (dataset.events[:4], dataset.peer[:4])


def _expected_outputs(model, inputs):
    """Each attention layer's (weights -> output) computed from its recorded call, and its real output."""
    calls = []
    hooks = [m.register_forward_hook(lambda mod, args, kw, out: calls.append((mod, args, kw, out)), with_kwargs=True)
             for m in model.modules() if hasattr(m, "out_proj") and hasattr(m, "num_heads")]
    model.eval()
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("name", ["gpcm", "attention_gpcm", "char_lm", "kolosis", "migt_tvdt", "tsa", "tsa_gated"])
def test_attention_weights_reproduce_each_layers_output(name):
    torch.manual_seed(0)
    model, inputs = _inputs(name)
    weights = model.get_attention_weights(*inputs)
    calls = _expected_outputs(model, inputs)
    assert len(weights) == len(calls) > 0
    for (key, w), (module, args, kw, out) in zip(weights.items(), calls):
        assert w.dim() == 4 and w.shape[1] == module.num_heads, key
        rows = w.sum(-1)
        assert torch.all(((rows - 1).abs() < 1e-5) | (rows == 0)), key
        with torch.no_grad():
            if isinstance(module, MultiheadAttention):
                query, k_in, v_in = args[:3]
                q, k, v = module._project(query, k_in, v_in, query is k_in and k_in is v_in)
                k, v, _ = module._append_extra_keys(k, v)
                got, want = module.out_proj(merge_heads(w @ v)), out[0]
            else:
                kw = {k: v for k, v in kw.items() if k in ("key_padding_mask", "categories", "times")}
                _, v = causal_layer_weights(module, args[0], **kw)
                got, want = module.out_proj(merge_heads(w @ v)), out
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=key)


def test_weights_respect_causality_and_the_window():
    model, inputs = _inputs("gpcm")
    w = model.get_attention_weights(*inputs)["mixer.attention"]
    T = w.shape[-1]
    delta = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    assert torch.all(w[..., (delta < 0) | (delta > 5)] == 0)
    assert torch.all(w[1, :, :, 6:] == 0)  # padded keys of the second student


def test_migt_defaults_to_five_horizons_by_seven_quantiles():
    model = MIGTTVDT()
    assert model.horizon == 5 and len(model.quantiles) == 7 and model.quantiles[3] == 0.5
    args = migt_parser().parse_args(["migt_tvdt"])
    assert args.horizon == 5 and len(args.quantiles) == 7


def test_cli_unknown_name_is_a_usage_error(capsys):
    assert models_cli.main(["gpt"]) == 2
    err = capsys.readouterr().err
    assert "unknown model name 'gpt'" in err and "gpcm" in err and "Traceback" not in err
