"""char_lm / char_lstm learn an order-2 Markov source close to its entropy rate; the CLI is deterministic."""
import json

import pytest
import torch

from tempattn.data import DataUnavailable
from tempattn.models import __main__ as models_cli
from tempattn.models.char_lm import train as train_module
from tempattn.models.char_lm import CharLSTM, CharTransformerLM
from tempattn.models.char_lm.data import synthetic_corpus
from tempattn.models.char_lm.train import TrainConfig, main, train, unigram_cross_entropy

VOCAB = 8
CONFIG = TrainConfig(epochs=4, steps_per_epoch=100, batch_size=32, context=32, lr=1e-2, max_eval_chars=4000)
MARGIN = 0.1  # nats/char above the entropy rate (~1.14 here; the unigram baseline is ~0.9 higher)


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(n_train=30000, n_val=4000, vocab=VOCAB, seed=1)


@pytest.mark.parametrize("build", [
    lambda: CharTransformerLM(vocab_size=VOCAB, context=32, embed_dim=32, num_heads=2, num_layers=1, dropout=0.0,
                              backend="cpu"),
    lambda: CharLSTM(vocab_size=VOCAB, embed_dim=16, hidden_size=32),
], ids=["char_lm", "char_lstm"])
def test_learns_markov_source_near_its_entropy_rate(corpus, build):
    torch.manual_seed(0)
    history = train(build(), corpus, CONFIG)
    val_loss = history[-1]["val_loss"]
    unigram = unigram_cross_entropy(corpus.train, corpus.val, VOCAB)
    assert val_loss < corpus.optimum + MARGIN, (val_loss, corpus.optimum)
    assert val_loss < unigram - 0.7


def run_cli(name, out):
    argv = [name, "--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "5", "--batch-size", "4",
            "--context", "8", "--embed-dim", "8", "--num-heads", "2", "--num-layers", "1", "--max-eval-chars", "400",
            "--sample-chars", "12", "--backend", "cpu", "--seed", "3", "--out", str(out)]
    assert models_cli.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("name", ["char_lm", "char_lstm"])
def test_cli_writes_deterministic_metrics(tmp_path, name, capsys):
    first, second = run_cli(name, tmp_path / "a"), run_cli(name, tmp_path / "b")
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in first["epochs"]]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in second["epochs"]]
    assert first["extra"]["sample"] == second["extra"]["sample"] and len(first["extra"]["sample"]) == 16 + 12
    best = first["epochs"][first["best_epoch"] - 1]
    assert first["final"] == {"val": {"loss": best["val_loss"], "perplexity": best["val_perplexity"],
                                      "bpc": best["val_bpc"]}} and first["final_split"] == "val"
    assert first["references"]["optimum"] == pytest.approx(synthetic_corpus(seed=3).optimum)
    assert sum(line.startswith("epoch ") for line in capsys.readouterr().out.splitlines()) == 4


def test_cli_rejects_bad_options():
    with pytest.raises(SystemExit):
        main(["char_lm", "--epochs", "0"])


def test_cli_reports_unavailable_data(monkeypatch, capsys):
    def unavailable(*args):
        raise DataUnavailable("pip download brotli==1.2.1 failed (exit 1): no network")
    monkeypatch.setattr(train_module, "load_dataset", unavailable)
    assert main(["char_lm", "--dataset", "alice"]) == 1
    assert "alice: could not fetch the data: pip download brotli==1.2.1 failed" in capsys.readouterr().err
