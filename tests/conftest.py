"""Shared fixtures: fresh random seeds per test (reported on failure) and the backends to test."""
import os
import random

import pytest
import torch

import tempattn


def cpu_tensor_backends():
    """Backends that can run on CPU tensors here (Triton only under TRITON_INTERPRET=1)."""
    status = tempattn.backends()
    names = ["reference", "cpu"]
    if os.environ.get("TRITON_INTERPRET") == "1":
        names.append("triton")
    return [n for n in names if status[n]["available"]]


BACKENDS = cpu_tensor_backends()
FLOAT64_BACKENDS = [b for b in BACKENDS if b in ("reference", "cpu")]


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Seed torch with a fresh random seed per test; the seed is printed when a test fails."""
    seed = int(os.environ.get("TEMPATTN_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))
    return seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "torch_seed"]
        if seeds:
            report.sections.append(("seed", f"reproduce with TEMPATTN_TEST_SEED={seeds[0]}"))
