"""Shared fixtures: fresh random seeds per test (reported on failure) and the backends to test."""
import os
import random
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import tempattn


@dataclass(frozen=True)
class Target:
    """A (device, backend) pair the suite runs on; ``unavailable`` says why its tests skip here (the GPU
    targets are always collected, so `pytest -k cuda` lists what a GPU machine runs)."""
    device: str
    backend: str
    unavailable: Optional[str] = None

    def __str__(self):
        return f"{self.device}-{self.backend}"

    @property
    def float64(self) -> bool:
        return self.backend in ("reference", "cpu")

    @property
    def bf16_arithmetic(self) -> bool:
        """bf16 arithmetic is wrong under TRITON_INTERPRET (loads are fine); it is tested on GPU."""
        return not (self.backend == "triton" and self.device == "cpu")


def available_targets():
    """Every backend that can run here: CPU ones (Triton under TRITON_INTERPRET=1), and the GPU ones, which
    skip (with the reason) where they cannot run."""
    status = tempattn.backends()
    names = ["reference", "cpu"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else [])
    targets = [Target("cpu", n) for n in names if status[n]["available"]]
    for name in ("triton", "cuda"):
        reason = None if torch.cuda.is_available() else "no CUDA device"
        reason = reason or (None if status[name]["available"] else status[name]["reason"])
        targets.append(Target("cuda", name, reason))
    return targets


TARGETS = available_targets()
FLOAT64_TARGETS = [t for t in TARGETS if t.float64]


@pytest.fixture(autouse=True)
def skip_unavailable_target(request):
    """Skips a test parametrised with a target that cannot run here (before any fixture uses its device)."""
    callspec = getattr(request.node, "callspec", None)
    for value in (callspec.params.values() if callspec is not None else ()):
        if isinstance(value, Target) and value.unavailable:
            pytest.skip(f"target {value}: {value.unavailable}")


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


@pytest.fixture(autouse=True)
def default_device_restored():
    """Tests may set torch's default device to their target's; put it back afterwards."""
    yield
    torch.set_default_device(None)


@pytest.fixture(params=TARGETS, ids=str)
def backend(request):
    """Each target's backend name, with torch's default device set to the target's device."""
    torch.set_default_device(request.param.device)
    return request.param.backend
