"""ROC-AUC and PR-AUC (average precision) against hand-computed values and pair counting."""
import pytest
import torch

from tempattn.models.tsa.data import bayes_optimal_auc
from tempattn.models.tsa.train import average_precision, roc_auc


def test_hand_computed_without_ties():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert roc_auc(scores, labels) == pytest.approx(0.75, abs=1e-12)
    # thresholds 0.8 (P=1, R=1/2), 0.4 (P=1/2, R=1/2), 0.35 (P=2/3, R=1), 0.1 (P=1/2, R=1)
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-12)


def test_hand_computed_with_ties():
    scores, labels = [0.5, 0.5, 0.2, 0.8, 0.2], [1, 0, 0, 1, 1]
    # positives 0.5, 0.8, 0.2 vs negatives 0.5, 0.2: 0.5 + 1 + 1 + 1 + 0 + 0.5 = 4 of 6 pairs
    assert roc_auc(scores, labels) == pytest.approx(4 / 6, abs=1e-12)
    # tied scores are one threshold: 0.8 (P=1, R=1/3), 0.5 (P=2/3, R=2/3), 0.2 (P=3/5, R=1)
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)


def test_all_tied_scores_give_chance_auc_and_prevalence():
    labels = torch.tensor([1, 0, 0, 1, 0])
    assert roc_auc(torch.full((5,), 0.3), labels) == pytest.approx(0.5)
    assert average_precision(torch.full((5,), 0.3), labels) == pytest.approx(2 / 5)


def test_perfect_and_reversed_rankings():
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    scores = torch.randn(6).abs() + labels * 10
    assert roc_auc(scores, labels) == 1.0
    assert average_precision(scores, labels) == pytest.approx(1.0)
    assert roc_auc(-scores, labels) == 0.0


def test_roc_auc_matches_pair_counting_with_many_ties():
    scores = torch.randint(0, 6, (300,)).double()
    labels = torch.randint(0, 2, (300,))
    labels[:2] = torch.tensor([0, 1])
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    expected = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_average_precision_matches_threshold_sweep():
    scores = torch.randint(0, 8, (200,)).double()
    labels = torch.randint(0, 2, (200,))
    labels[:2] = torch.tensor([0, 1])
    total, previous_recall = 0.0, 0.0
    for threshold in torch.unique(scores).flip(0):
        predicted = scores >= threshold
        recall = (predicted & (labels == 1)).sum().item() / (labels == 1).sum().item()
        precision = (predicted & (labels == 1)).sum().item() / predicted.sum().item()
        total += (recall - previous_recall) * precision
        previous_recall = recall
    assert average_precision(scores, labels) == pytest.approx(total, abs=1e-12)


@pytest.mark.parametrize("scores,labels,words", [
    ([0.1, 0.2], [1, 1], ["labels", "both classes", "2 positives"]),
    ([0.1, 0.2, 0.3], [1, 0], ["scores", "labels", "same length"]),
    ([0.1, 0.2], [2, 0], ["labels", "0/1"]),
    ([0.1, float("nan")], [1, 0], ["scores", "finite"]),
])
def test_bad_inputs_raise_value_error(scores, labels, words):
    for metric in (roc_auc, average_precision):
        with pytest.raises(ValueError) as info:
            metric(scores, labels)
        assert all(w in str(info.value) for w in words) and "hint" in str(info.value)


def test_bayes_optimal_auc_closed_form():
    assert bayes_optimal_auc(0.3, 0.0) == 1.0
    assert bayes_optimal_auc(0.3, 0.5) == pytest.approx(0.5)
    # hand: pi=0.5, rho=0.1 -> a=.45, b=.05, c=.05, e=.45; (a e + (a c + b e)/2) / (.5 * .5) = 0.9
    assert bayes_optimal_auc(0.5, 0.1) == pytest.approx(0.9)
    z = (torch.rand(200_000) < 0.3).double()
    y = torch.where(torch.rand(200_000) < 0.1, 1 - z, z)
    assert roc_auc(z, y) == pytest.approx(bayes_optimal_auc(0.3, 0.1), abs=0.01)
