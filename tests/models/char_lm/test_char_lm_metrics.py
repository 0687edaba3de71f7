"""char_lm metrics, schedule and corpora against hand-computed values."""
import math

import pytest
import torch

from tempattn.data import DataUnavailable
from tempattn.models.char_lm.data import load_corpus, load_dataset, synthetic_corpus
from tempattn.models.char_lm.model import CharLanguageModel
from tempattn.models.char_lm.train import char_metrics, evaluate, evaluation_windows, unigram_cross_entropy
from tempattn.models.common.text import MarkovSource, load_text


def test_char_metrics_by_hand():
    metrics = char_metrics(3 * math.log(4.0), 3)
    assert metrics["loss"] == pytest.approx(math.log(4.0))
    assert metrics["perplexity"] == pytest.approx(4.0)
    assert metrics["bpc"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="n_chars"):
        char_metrics(1.0, 0)


def test_evaluation_windows_cover_each_target_once():
    x, y = evaluation_windows(torch.arange(11), 3)
    torch.testing.assert_close(x, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]))
    torch.testing.assert_close(y, torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]))
    with pytest.raises(ValueError, match="length=3"):
        evaluation_windows(torch.arange(3), 3)


class FixedDistribution(CharLanguageModel):
    """Predicts the same distribution ``probs (V,)`` at every position."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.vocab_size = len(probs)
        self.log_probs = torch.nn.Parameter(probs.log())

    def forward(self, ids):
        return self.log_probs.expand(*ids.shape, self.vocab_size)


def test_evaluate_scores_every_window_target():
    probs = torch.softmax(torch.randn(5), 0)
    ids = torch.randint(0, 5, (23,))
    targets = ids[1:21]  # (23 - 1) // 4 = 5 windows of 4: targets at positions 1..20
    expected = float(-probs.log()[targets].mean())
    got = evaluate(FixedDistribution(probs), ids, context=4, batch_size=2)
    assert got["loss"] == pytest.approx(expected, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)


def test_synthetic_corpus_is_seeded_with_its_entropy_rate_as_optimum():
    a, b = synthetic_corpus(2000, 500, seed=3), synthetic_corpus(2000, 500, seed=3)
    other = synthetic_corpus(2000, 500, seed=4)
    torch.testing.assert_close(a.train, b.train)
    assert not torch.equal(a.train, other.train)
    assert not torch.equal(a.train[:500], a.val)
    assert a.optimum == pytest.approx(MarkovSource(vocab=12, order=2, concentration=0.3, seed=3).entropy_rate)
    assert a.vocab.decode(a.train[:5]) == "".join("abcdefghijkl"[int(i)] for i in a.train[:5])
    unigram = unigram_cross_entropy(a.train, a.val, 12)
    assert a.optimum < unigram - 0.3  # context matters: a model can beat the unigram baseline clearly


@pytest.mark.parametrize("kwargs,exc,name", [(dict(n_train=1), ValueError, "n_train"),
                                             (dict(vocab=27), ValueError, "vocab"),
                                             (dict(n_val=2.5), TypeError, "n_val")])
def test_synthetic_corpus_rejects_bad_sizes(kwargs, exc, name):
    with pytest.raises(exc, match=rf"`{name}` must be .*got .*hint"):
        synthetic_corpus(**kwargs)


def test_load_dataset_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"`name` must be one of .*'alice'.*got 'wikitext'"):
        load_dataset("wikitext")


def test_alice_split_is_contiguous():
    try:
        corpus = load_corpus("alice", val_fraction=0.1)
    except DataUnavailable as exc:
        pytest.skip(f"alice unavailable here: {exc}")
    text = load_text("alice")
    cut = len(corpus.train)
    assert cut + len(corpus.val) == len(text) and len(corpus.val) == pytest.approx(0.1 * len(text), abs=1)
    assert corpus.vocab.decode(corpus.train) == text[:cut]
    assert corpus.vocab.decode(corpus.val) == text[cut:]
