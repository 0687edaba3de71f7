"""masked_sdpa, causal, last 10% of keys padded in half the batch; also the plain causal SDPA floor."""
import tempattn
from tempattn.bench.anchors import OpSpec, build_callable, causal_admissible, spec_cases
from tempattn.bench.cases import Variant


def run_tempattn(p, backend):
    return tempattn.masked_sdpa(p.q, p.k, p.v, key_valid_mask=p.key_valid, causal=True, backend=backend)


def dense_mask(p):
    """(B, 1, T, T) bool, True = attend: causal and key valid."""
    return causal_admissible(p.case.T, None, p.q.device) & p.key_valid[:, None, None, :]


def mask_mod(p):
    key_valid = p.key_valid

    def causal_valid(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & key_valid[b, kv_idx]
    return causal_valid


SPEC = OpSpec(name="masked_sdpa", variants=(Variant(padded=True),), make_params=lambda case, device: {},
              run_tempattn=run_tempattn, dense_bias=dense_mask, score_mod=None, mask_mod=mask_mod, with_floor=True)


def cases(profile, devices):
    return spec_cases(SPEC, profile, devices)


def test_masked_sdpa(case, run_benchmark):
    run_benchmark(case, lambda: build_callable(SPEC, case))
