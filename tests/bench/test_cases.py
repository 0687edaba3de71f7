"""Case generation, admissible-pair FLOP counts and the unsupported-case rules of tempattn.bench.cases."""
import pytest

from tempattn.bench import cases as C
from tempattn.ops.common.reference import admissible_mask


def _case(provider="tempattn_cpu", mode="fwd", T=96, W=None, S=None, padded=False, op="relpos_attention"):
    return C.Case(op=op, provider=provider, mode=mode, device="cpu", B=3, H=2, T=T, D=8, W=W, S=S, padded=padded)


@pytest.mark.parametrize("W,padded", [(None, False), (None, True), (7, False), (7, True), (200, True)])
def test_admissible_pairs_match_the_reference_mask(W, padded):
    case = _case(W=W, padded=padded)
    valid = C.key_valid_mask(case)
    mask = admissible_mask(valid, case.T, case.T, "cpu", causal=True, window=W)
    assert C.admissible_pairs(case) == int(mask.expand(case.B, 1, case.T, case.T).sum()) * case.H


def test_padding_covers_the_last_tenth_of_every_odd_batch_row():
    valid = C.key_valid_mask(_case(T=100, padded=True))
    assert valid[0].all() and valid[2].all()
    assert valid[1, :90].all() and not valid[1, 90:].any()


def test_the_floor_counts_plain_causal_pairs():
    floor = _case(provider=C.FLOOR, padded=True, W=5, op="masked_sdpa")
    assert C.key_valid_mask(floor) is None
    assert C.admissible_pairs(floor) == floor.B * floor.H * floor.T * (floor.T + 1) // 2


def test_fwd_bwd_flops_are_three_and_a_half_forward():
    fwd = C.flops(_case(W=7))
    assert fwd == 4 * 8 * C.admissible_pairs(_case(W=7))
    assert C.flops(_case(W=7, mode="fwd+bwd")) == pytest.approx(3.5 * fwd)


def test_op_cases_cover_every_provider_mode_and_length():
    profile = C.PROFILES["quick"]
    cases = C.op_cases("masked_sdpa", [C.Variant(padded=True)], True, profile, ["cpu"])
    assert {c.T for c in cases} == set(profile.T_grid)
    assert {c.mode for c in cases} == set(C.MODES)
    assert {c.provider for c in cases} == {"naive", "sdpa_dense", "flex", C.FLOOR, "tempattn_reference", "tempattn_cpu"}
    assert len({c.id for c in cases}) == len(cases)


def test_tiny_profile_when_benchmarks_are_disabled(monkeypatch):
    monkeypatch.setenv(C.PROFILE_ENV, "full")
    assert C.active_profile(True).name == "tiny"
    assert C.active_profile(False).name == "full"
    monkeypatch.setenv(C.PROFILE_ENV, "huge")
    with pytest.raises(ValueError, match="quick"):
        C.active_profile(False)


def test_unsupported_reasons():
    profile, plenty = C.PROFILES["quick"], 2 ** 50
    assert "no CPU backward" in C.unsupported_reason(_case(provider="flex", mode="fwd+bwd"), profile, plenty)
    assert C.unsupported_reason(_case(provider="flex"), profile, plenty) is None
    assert "O(T^2)" in C.unsupported_reason(_case(provider="tempattn_reference", T=4096), profile, plenty)
    assert "out of memory" in C.unsupported_reason(_case(provider="naive", T=4096), profile, 2 ** 20)
    assert C.unsupported_reason(_case(provider="tempattn_triton"), profile, plenty).startswith("backend 'triton'")
