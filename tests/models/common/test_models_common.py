"""Pieces shared by the model families: the LM schedule and unigram baseline, the CLI options."""
import argparse
import json
import math

import pytest
import torch

from tempattn.models import create_model, model_names
from tempattn.models.common.cli import TrainBudget, positive, training_parser, write_metrics
from tempattn.models.common.lm import lr_factor, unigram_cross_entropy


def test_lr_factor_warms_up_then_decays_to_the_floor():
    assert [lr_factor(s, 100, 4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(4, 100, 4) == pytest.approx(1.0)
    assert lr_factor(52, 100, 4) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(55, 100, 10, floor=0.2) == pytest.approx(0.6)  # half-way through the cosine
    assert lr_factor(100, 100, 4) == pytest.approx(0.1)


def test_unigram_cross_entropy_by_hand():
    # add-one counts of [0, 0, 1] over 3 symbols: [3, 2, 1] / 6
    got = unigram_cross_entropy(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), vocab_size=3)
    assert got == pytest.approx(-(math.log(3 / 6) + math.log(2 / 6) + math.log(1 / 6)) / 3)
    plain = unigram_cross_entropy(torch.tensor([0, 0, 1]), torch.tensor([0, 1]), vocab_size=3, smoothing=0.0)
    assert plain == pytest.approx(-(math.log(2 / 3) + math.log(1 / 3)) / 2)


def test_training_parser_shares_the_options_and_validates_them():
    parser = training_parser(["m"], ["a", "b"], "a", "test", batch_size=32)
    args = parser.parse_args(["m", "--epochs", "3", "--lr", "0.01", "--threads", "1"])
    config = TrainBudget.from_args(args)
    assert (config.epochs, config.steps_per_epoch, config.batch_size, config.lr, config.seed, config.device) == \
        (3, 100, 32, 0.01, 0, "cpu")
    for bad in (["m", "--epochs", "0"], ["m", "--lr", "nan"], ["m", "--dataset", "c"], ["other"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


@pytest.mark.parametrize("text", ["0", "-2", "x", "inf"])
def test_positive_rejects_non_positive_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive float"):
        positive(float)(text)


def test_write_metrics_writes_json_only_with_a_directory(tmp_path):
    write_metrics(None, {"a": 1})
    write_metrics(tmp_path / "run", {"a": [1, 2]})
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"a": [1, 2]}


@pytest.mark.parametrize("name", model_names())
def test_every_registered_name_builds_with_defaults(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="unknown model name 'gpt'.*expected one of"):
        create_model("gpt")
    with pytest.raises(TypeError, match="name must be a str"):
        create_model(3)


def _family_call(name):
    """(model in eval mode, its forward arguments) at a tiny size."""
    if name in ("gpcm", "attention_gpcm"):
        return create_model(name, n_items=20, n_categories=3), (torch.randint(0, 20, (2, 9)),
                                                                torch.randint(0, 3, (2, 9)))
    if name == "migt_tvdt":
        x = torch.randn(2, 16, 4)
        return create_model(name), (x, (torch.arange(16) * 86400 + 1_600_000_000).repeat(2, 1))
    if name in ("tsa", "tsa_gated"):
        from tempattn.models.tsa.data import SyntheticConfig, make_synthetic
        data = make_synthetic(SyntheticConfig(n_accounts=6), seed=0)
        model = create_model(name, **data.spec.model_kwargs())
        return model, (data.events,) if name == "tsa" else (data.events, data.events)  # peers: no later events
    return create_model(name), (torch.randint(0, 64, (2, 24)),)


@pytest.mark.parametrize("name", [n for n in model_names() if n != "char_lstm"])  # Dynamo does not trace nn.LSTM
def test_every_model_compiles_without_graph_breaks(name):
    """torch.compile(fullgraph=True) traces each model whole (value checks are skipped while compiling)."""
    torch._dynamo.reset()
    model, args = _family_call(name)
    model.eval()
    expected = model(*args)
    got = torch.compile(model, backend="aot_eager", fullgraph=True)(*args)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_mean_loss_reads_the_epoch_once_and_matches_the_float_sum():
    from tempattn.models.common.cli import mean_loss
    losses = [torch.tensor(v) for v in (0.1, 0.7, 2.5)]  # float32, as the steps return them
    assert mean_loss(losses) == sum(float(v) for v in losses) / 3


def test_step_timing_steps_run():
    """The host-overhead measurement script (no timing is asserted): one step of each, alternated."""
    from tempattn.models.common import step_timing
    steps = {"gpcm": step_timing.gpcm_step("gpcm", batch=2, length=5),
             "attention_gpcm": step_timing.gpcm_step("attention_gpcm", batch=2, length=5),
             "tsa": step_timing.tsa_step(batch=4), "char_lm": step_timing.char_lm_decode_step(prompt_length=3)}
    wall, cpu = step_timing.alternate(steps, rounds=2, warmup=1)
    assert all(len(wall[name]) == len(cpu[name]) == 2 for name in steps)
