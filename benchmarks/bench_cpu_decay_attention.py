"""decay_attention with S=3 decay scales, without a window and with W=64.

The bias is m_ij = log(sum_s a_hs * gamma_hs^(i - j) + eps), a_h = softmax(alpha_logits[h]).
"""
import math

import torch

import tempattn
from tempattn.bench.anchors import (OpSpec, build_callable, causal_admissible, causal_mask_mod, position_offsets,
                                    spec_cases)
from tempattn.bench.cases import Variant

EPS = 1e-8


def make_params(case, device):
    gammas = torch.linspace(0.7, 0.99, case.S, device=device)
    return {"log_gamma": gammas.log().expand(case.H, case.S).clone(),
            "alpha_logits": 0.1 * torch.randn(case.H, case.S, device=device)}


def run_tempattn(p, backend):
    return tempattn.decay_attention(p.q, p.k, p.v, p.params["log_gamma"], p.params["alpha_logits"], eps=EPS,
                                    window=p.case.W, backend=backend)


def dense_bias(p):
    """(H, T, T): the decay mixture inside the causal (window), -inf outside."""
    T, W, device = p.case.T, p.case.W, p.q.device
    log_gamma, alpha_logits = p.params["log_gamma"], p.params["alpha_logits"]
    delta = position_offsets(T, device).clamp_min(0).to(log_gamma.dtype)
    terms = alpha_logits.log_softmax(-1)[:, :, None, None] + log_gamma[:, :, None, None] * delta  # (H, S, T, T)
    mixture = torch.logaddexp(terms.logsumexp(dim=1), torch.tensor(math.log(EPS), device=device))
    return mixture.masked_fill(~causal_admissible(T, W, device), float("-inf"))


def _logsumexp(values):
    top = values[0]
    for value in values[1:]:
        top = torch.maximum(top, value)
    return top + torch.log(sum(torch.exp(value - top) for value in values))


def score_mod(p):
    log_gamma, alpha_logits, S = p.params["log_gamma"], p.params["alpha_logits"], p.case.S

    def add_decay_mixture(score, b, h, q_idx, kv_idx):
        delta = (q_idx - kv_idx).clamp(min=0).to(log_gamma.dtype)
        log_norm = _logsumexp([alpha_logits[h, s] for s in range(S)])
        mixture = _logsumexp([alpha_logits[h, s] + log_gamma[h, s] * delta for s in range(S)]) - log_norm
        return score + _logsumexp([mixture, torch.full_like(mixture, math.log(EPS))])
    return add_decay_mixture


SPEC = OpSpec(name="decay_attention", variants=(Variant(S=3), Variant(S=3, W=64)), make_params=make_params,
              run_tempattn=run_tempattn, dense_bias=dense_bias, score_mod=score_mod,
              mask_mod=lambda p: causal_mask_mod(p.case.W))


def cases(profile, devices):
    return spec_cases(SPEC, profile, devices)


def test_decay_attention(case, run_benchmark):
    run_benchmark(case, lambda: build_callable(SPEC, case))
