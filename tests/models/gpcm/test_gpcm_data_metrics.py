"""GPCM family: metrics against hand-computed values, sequences, splits, the oracle, the real data."""
import math

import pytest
import torch

from tempattn.data import DataUnavailable, extract_member
from tempattn.data.rdata import read_rda
from tempattn.models.gpcm import data as gpcm_data
from tempattn.models.gpcm.data import (ResponseSequences, load_dataset, oracle_log_probs, sequences_from_matrix,
                                       simulate_gpcm, split_by_student, true_log_probs)
from tempattn.models.gpcm.train import masked_nll, per_item_marginal, prediction_metrics, quadratic_weighted_kappa

NAN = float("nan")


def test_qwk_matches_a_hand_computed_value():
    # O has (0,0), (1,2), (2,2), (2,1): Σ w O = 2 · 1/4; marginals (1, 1, 2) both ways, Σ w t pᵀ / n = 5.5 / 4
    targets, predictions = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1])
    assert quadratic_weighted_kappa(targets, predictions, 3) == pytest.approx(1 - 0.5 / 1.375)
    assert quadratic_weighted_kappa(targets, targets, 3) == pytest.approx(1.0)
    assert quadratic_weighted_kappa(targets, torch.full((4,), 1), 3) == pytest.approx(0.0)
    assert quadratic_weighted_kappa(targets, 2 - targets, 3) < 0  # reversed order: worse than chance
    assert math.isnan(quadratic_weighted_kappa(torch.tensor([1, 1]), torch.tensor([1, 1]), 3))


def test_prediction_metrics_match_hand_computed_values():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]]])
    targets = torch.tensor([[0, 2, 0, 1, 2]])
    padding = torch.tensor([[False, False, False, False, True]])
    metrics = prediction_metrics(probs.log(), targets, padding)
    assert metrics["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.2) + math.log(0.3)) / 4)
    assert metrics["accuracy"] == pytest.approx(0.5)  # argmax 0, 2, 1, 2 vs 0, 2, 0, 1
    assert metrics["qwk"] == pytest.approx(quadratic_weighted_kappa(torch.tensor([0, 2, 0, 1]),
                                                                    torch.tensor([0, 2, 1, 2]), 3))
    assert metrics["count"] == 4


def test_masked_nll_ignores_padded_targets_and_is_differentiable():
    log_probs = torch.randn(2, 5, 3).log_softmax(-1).requires_grad_()
    targets = torch.randint(0, 3, (2, 5))
    padding = torch.rand(2, 5) < 0.4
    padding[0, 0] = False
    loss = masked_nll(log_probs, targets.masked_fill(padding, 99), padding)
    valid = ~padding
    expected = -log_probs.gather(-1, targets[..., None]).squeeze(-1)[valid].mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert bool((log_probs.grad[padding] == 0).all())


def test_per_item_marginal_is_the_smoothed_training_frequency():
    seqs = ResponseSequences(items=torch.tensor([[0, 1, 0], [0, 1, 1]]), responses=torch.tensor([[0, 1, 1], [0, 0, 1]]),
                             padding_mask=torch.tensor([[False, False, False], [False, False, True]]),
                             n_items=3, n_categories=3, item_categories=(3, 2, 3))
    table = per_item_marginal(seqs).exp()
    torch.testing.assert_close(table[0], torch.tensor([3.0, 2.0, 1.0]) / 6)  # responses 0, 1, 0 + 1 each
    torch.testing.assert_close(table[1], torch.tensor([2.0, 2.0, 0.0]) / 4)  # 2 categories: 1, 0 + 1 each
    torch.testing.assert_close(table[2], torch.full((3,), 1 / 3))  # never seen: uniform


def test_sequences_drop_missing_responses_and_keep_test_order():
    matrix = torch.tensor([[1.0, NAN, 2.0, 0.0], [NAN, NAN, NAN, NAN], [NAN, 1.0, NAN, NAN], [0.0, 1.0, 1.0, 2.0]])
    seqs = sequences_from_matrix(matrix, 3)
    assert len(seqs) == 3  # the student with no answers is dropped
    assert seqs.items.tolist()[0][:3] == [0, 2, 3] and seqs.responses.tolist()[0][:3] == [1, 2, 0]
    assert seqs.padding_mask.tolist() == [[False, False, False, True], [False, True, True, True], [False] * 4]
    assert seqs.items[1, 0] == 1 and seqs.responses[1, 0] == 1
    assert seqs.items[2].tolist() == [0, 1, 2, 3] and seqs.responses[2].tolist() == [0, 1, 1, 2]


@pytest.mark.parametrize("matrix, exc, words", [
    (torch.tensor([[0, 1]]), TypeError, ["`matrix`", "float", "NaN"]),
    (torch.tensor([[0.0, 3.0]]), ValueError, ["`matrix`", "[0, 3)", "3.0"]),
    (torch.tensor([[0.5, 1.0]]), ValueError, ["`matrix`", "integer", "0.5"]),
])
def test_bad_response_matrices_are_named(matrix, exc, words):
    with pytest.raises(exc) as info:
        sequences_from_matrix(matrix, 3)
    for word in words:
        assert word in str(info.value)


def test_student_split_is_disjoint_complete_and_seeded():
    split = split_by_student(103, seed=5)
    joined = torch.cat(list(split))
    assert sorted(joined.tolist()) == list(range(103))
    assert len(split.val) == len(split.test) == 10
    assert all(torch.equal(a, b) for a, b in zip(split, split_by_student(103, seed=5)))
    assert not torch.equal(split.train, split_by_student(103, seed=6).train)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_student(10, seed=0, val_fraction=0.6, test_fraction=0.5)


def test_simulation_is_seeded_and_has_ordered_true_thresholds():
    sim = simulate_gpcm(50, n_items=8, n_categories=4, seed=3)
    again = simulate_gpcm(50, n_items=8, n_categories=4, seed=3)
    assert torch.equal(sim.sequences.responses, again.sequences.responses)
    assert bool((sim.beta.diff(dim=1) > 0).all()) and bool((sim.alpha > 0).all())
    seq = sim.sequences
    assert sorted(seq.items[0].tolist()) == list(range(8))  # a permutation of the items
    assert int((~seq.padding_mask).sum(1).min()) >= 4


@pytest.mark.parametrize("drift", [dict(), dict(drift_std=0.3, learning_gain=0.1)])
def test_oracle_is_calibrated_and_between_the_true_model_and_the_marginal(drift):
    """A Bayes-optimal predictor's mean NLL equals its mean entropy; one that peeked at r_t would beat it."""
    sim = simulate_gpcm(3000, n_items=16, n_categories=3, seed=int(torch.randint(1000, ())), **drift)
    seq = sim.sequences
    oracle = oracle_log_probs(sim)
    nll = prediction_metrics(oracle, seq.responses, seq.padding_mask)["nll"]
    entropy = float(-(oracle.exp() * oracle).sum(-1)[~seq.padding_mask].mean())
    assert nll == pytest.approx(entropy, abs=0.015)
    floor = prediction_metrics(true_log_probs(sim), seq.responses, seq.padding_mask)["nll"]
    marginal = prediction_metrics(per_item_marginal(seq)[seq.items], seq.responses, seq.padding_mask)["nll"]
    assert floor < nll < marginal - 0.05


def _real_or_skip(name: str):
    try:
        return load_dataset(name)
    except DataUnavailable as exc:
        pytest.skip(f"{name} unavailable: {exc}")


def test_national_maths_loads_with_item_categories():
    seqs = _real_or_skip("math1")
    assert (len(seqs), seqs.n_items, seqs.n_categories) == (1008, 28, 5)
    assert not bool(seqs.padding_mask.any())  # no missing responses
    assert seqs.item_categories[:9] == (2,) * 9 and seqs.item_categories[-1] == 5
    assert bool((seqs.responses < torch.tensor(seqs.item_categories)[seqs.items]).all())


def test_swesat_is_scored_against_the_key_and_drops_missing_answers():
    seqs = _real_or_skip("swesat_verb")
    assert (seqs.n_items, seqs.n_categories) == (80, 2)
    answered = ~seqs.padding_mask
    assert int(answered.sum()) == 5000 * 80 - 1025  # the 1025 NaN answers are left out
    assert 0.5 < float(seqs.responses[answered].float().mean()) < 0.65  # a test of moderate difficulty
    assert bool((seqs.items[:, 1:] > seqs.items[:, :-1])[answered[:, 1:]].all())  # test order


def test_math_exam_reads_the_r_data_of_the_debian_package():
    seqs = _real_or_skip("mathexam14w")
    assert (len(seqs), seqs.n_items, seqs.n_categories) == (729, 13, 3)
    answered = ~seqs.padding_mask
    counts = torch.bincount(seqs.responses[answered], minlength=3)
    assert int(counts.sum()) == 729 * 13 and bool((counts > 500).all())  # every credit level is common
    # The R data frame's own `nsolved` column counts each student's full credits: the matrix is
    # read in R's column-major layout, student by student.
    frame = read_rda(extract_member(gpcm_data._PSYCHOTOOLS, gpcm_data._MATH_EXAM))["MathExam14W"]
    full_credits = ((seqs.responses == 2) & answered).sum(dim=1)
    assert full_credits.tolist() == [int(n) for n in frame["nsolved"]]
