"""Synthetic ground truth, leak-free windows, the per-account split and the CDNOW parsing / injection."""
import numpy as np
import pytest
import torch

from tempattn.data import DataUnavailable
from tempattn.models.tsa import data as tsa_data
from tempattn.models.tsa.train import roc_auc

CDNOW_TEXT = """ customer_id  date number_of_cds  dollar_value
 00002 19970112  1   12.00
 00001 19970101  1   11.77
 00002 19970112  5   77.00
 00002 19970301  2   20.76
 00003 19970105  3   30.00
"""


def small_config(**kw):
    return tsa_data.SyntheticConfig(n_accounts=kw.pop("n_accounts", 400), **kw)


def test_synthetic_is_seeded():
    a, b = tsa_data.make_synthetic(small_config(), seed=3), tsa_data.make_synthetic(small_config(), seed=3)
    c = tsa_data.make_synthetic(small_config(), seed=4)
    assert torch.equal(a.events.numeric, b.events.numeric) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.events.numeric, c.events.numeric)


def test_synthetic_rates_and_oracle_auc_match_the_known_optimum():
    config = small_config(n_accounts=4000, label_noise=0.1)
    dataset = tsa_data.make_synthetic(config, seed=int(torch.randint(0, 1000, ())))
    assert float(dataset.clean_labels.mean()) == pytest.approx(config.fraud_rate, abs=0.03)
    assert float((dataset.labels != dataset.clean_labels).float().mean()) == pytest.approx(0.1, abs=0.015)
    optimum = tsa_data.bayes_optimal_auc(config.fraud_rate, config.label_noise)
    assert roc_auc(dataset.clean_labels, dataset.labels) == pytest.approx(optimum, abs=0.02)


def test_synthetic_fraud_pattern_is_identifiable_from_the_window():
    """Fraud rows end with a high-amount burst after a quiet gap; every decoy lacks one of the three."""
    dataset = tsa_data.make_synthetic(small_config(), seed=1)
    events = dataset.events
    lengths = (~events.padding_mask).sum(1)
    rows = torch.arange(len(lengths))
    last_gap = events.numeric[rows, lengths - 1, 1].expm1()
    for kind in ("fraud", "spree", "bulk_burst", "big_purchase", "normal"):
        selected = torch.tensor([k == kind for k in dataset.kinds])
        bursty = last_gap[selected] <= 0.1
        assert bool(bursty.all()) == (kind in ("fraud", "spree", "bulk_burst")), kind
        assert bool((dataset.clean_labels[selected] == (kind == "fraud")).all()), kind


def test_synthetic_peer_events_are_not_later_than_the_target():
    dataset = tsa_data.make_synthetic(small_config(with_peer=True), seed=2)
    lengths = (~dataset.events.padding_mask).sum(1)
    target_time = dataset.events.times[torch.arange(len(lengths)), lengths - 1]
    peer_times = dataset.peer.times.masked_fill(dataset.peer.padding_mask, float("-inf"))
    assert (peer_times.amax(1) < target_time).all()
    assert {"merchant_compromise", "peer_busy"} <= set(dataset.kinds)


def test_windows_only_see_events_up_to_the_target():
    n, target = 12, 7
    categorical, numeric = np.random.randint(0, 5, (n, 1)), np.random.randn(n, 2)
    times = np.sort(np.random.rand(n)) * 10
    window = tsa_data.pad_histories([(categorical[:target + 1], numeric[:target + 1], times[:target + 1])], 5)
    future = numeric.copy()
    future[target + 1:] += 100.0
    again = tsa_data.pad_histories([(categorical[:target + 1], future[:target + 1], times[:target + 1])], 5)
    assert torch.equal(window.numeric, again.numeric)
    assert torch.equal(window.numeric[0], torch.from_numpy(numeric[target - 4:target + 1]).float())
    past = numeric.copy()
    past[target - 1] += 1.0
    changed = tsa_data.pad_histories([(categorical[:target + 1], past[:target + 1], times[:target + 1])], 5)
    assert not torch.equal(window.numeric, changed.numeric)


def test_pad_histories_right_pads_short_histories():
    history = (np.array([[1], [2]]), np.random.randn(2, 3), np.array([0.5, 1.5]))
    events = tsa_data.pad_histories([history], 4)
    assert events.padding_mask.tolist() == [[False, False, True, True]]
    assert events.categorical[0, :, 0].tolist() == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="max_len.*positive int.*hint"):
        tsa_data.pad_histories([history], 0)


def test_split_by_group_is_disjoint_and_complete():
    groups = torch.randint(0, 50, (300,))
    parts = tsa_data.split_by_group(groups, seed=5)
    seen = [set(groups[p].tolist()) for p in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sorted(torch.cat(parts).tolist()) == list(range(300))
    with pytest.raises(ValueError, match="fractions.*sum"):
        tsa_data.split_by_group(groups, fractions=(0.5, 0.5, 0.5))


def test_parse_cdnow_sorts_by_customer_and_day():
    table = tsa_data.parse_cdnow(CDNOW_TEXT)
    assert table.customer.tolist() == [1, 2, 2, 2, 3]
    assert table.day.tolist() == [0, 11, 11, 59, 4]
    assert table.amount.tolist() == [11.77, 12.0, 77.0, 20.76, 30.0]
    assert table.last_rows().tolist() == [0, 3, 4]
    assert table.gaps().tolist() == [0, 0, 0, 48, 0]
    with pytest.raises(ValueError, match="CDNOW text.*4 fields"):
        tsa_data.parse_cdnow("header\n 1 19970101 3\n")


def test_injection_changes_only_the_targets_of_the_chosen_customers():
    rng = np.random.default_rng(int(torch.randint(0, 1000, ())))
    n = 3000
    customer = np.sort(rng.integers(0, 1000, n))
    table = tsa_data.Transactions(customer, np.sort(rng.integers(0, 500, n)).astype(float),
                                  rng.integers(1, 5, n).astype(float), rng.uniform(5, 50, n))
    table = table.take(np.lexsort((table.day, table.customer)))
    injected, labels, kinds = tsa_data.inject_anomalies(table, rate=0.1, seed=7)
    last = table.last_rows()
    assert labels.sum() == round(0.1 * len(last))
    changed = (injected.amount != table.amount) | (injected.quantity != table.quantity) | (injected.day != table.day)
    assert set(np.flatnonzero(changed)) <= set(last[labels == 1])
    for customer_index in np.flatnonzero(labels):
        row = last[customer_index]
        ratio = injected.amount[row] / table.amount[row]
        if kinds[customer_index] == "price_spike":
            assert 3 <= ratio <= 8 and injected.quantity[row] == table.quantity[row]
        else:
            factor = injected.quantity[row] / table.quantity[row]
            assert factor in (3, 4, 5, 6) and 0.9 * factor <= ratio <= 1.1 * factor
    again = tsa_data.inject_anomalies(table, rate=0.1, seed=7)
    assert np.array_equal(again[0].amount, injected.amount) and again[2] == kinds
    with pytest.raises(ValueError, match="rate.*\\(0, 1\\)"):
        tsa_data.inject_anomalies(table, rate=1.5)


def test_cdnow_loader_when_cached():
    """The real file: 23,570 customers, 5% injected, stated as injected. Skipped if it cannot be fetched."""
    try:
        dataset = tsa_data.load_cdnow(max_len=8)
    except DataUnavailable as exc:
        pytest.skip(f"CDNOW unavailable here: {exc}")
    assert len(dataset) == 23570 and int(dataset.labels.sum()) == round(0.05 * 23570)
    assert "INJECTED" in dataset.note
    assert dataset.events.numeric.shape == (23570, 8, 4)
    assert torch.equal(dataset.groups, torch.unique(dataset.groups))


@pytest.mark.parametrize("kw,words", [
    (dict(label_noise=0.6), ["label_noise", "[0, 0.5)", "0.6"]),
    (dict(min_history=0), ["min_history", "[1, max_history=12]"]),
    (dict(max_len=10), ["max_len", ">= max_history + 3 = 15", "10"]),
])
def test_synthetic_config_rejects_bad_values(kw, words):
    with pytest.raises(ValueError) as info:
        tsa_data.SyntheticConfig(**kw)
    assert all(w in str(info.value) for w in words) and "hint" in str(info.value)
