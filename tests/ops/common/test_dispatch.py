"""Backend selection (docs/backends.md)."""
import pytest
import torch

import tempattn
from tempattn import _dispatch


def _qkv():
    return (torch.randn(1, 2, 5, 8) for _ in range(3))


def test_backends_reports_every_backend_with_a_reason_when_unavailable():
    status = tempattn.backends()
    assert set(status) == {"reference", "cpu", "triton", "cuda"}
    assert status["reference"] == {"available": True, "reason": None}
    for name, entry in status.items():
        assert isinstance(entry["available"], bool)
        assert (entry["reason"] is None) == entry["available"], name
        if not entry["available"]:
            assert len(entry["reason"]) > 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU messages")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_explicit_gpu_backend_on_cpu_tensors_says_why(backend, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match=f"backend '{backend}' cannot run"):
        tempattn.masked_sdpa(*_qkv(), backend=backend)


def test_auto_on_cpu_picks_the_fused_cpu_kernels_or_warns_once(monkeypatch):
    monkeypatch.delenv("TEMPATTN_BACKEND", raising=False)
    chosen = _dispatch.resolve("op", "auto", "cpu", torch.empty(0))
    assert chosen == ("cpu" if tempattn.backends()["cpu"]["available"] else "reference")


def test_reference_fallback_warns_when_the_extension_is_missing(monkeypatch):
    monkeypatch.delenv("TEMPATTN_BACKEND", raising=False)
    monkeypatch.setattr(_dispatch, "_cpu_reason", lambda: "tempattn._C is not built (test)")
    monkeypatch.setattr(_dispatch, "_RESOLVED", {})
    _dispatch._warn_reference_fallback.cache_clear()
    with pytest.warns(RuntimeWarning, match="reference backend"):
        assert _dispatch.resolve("op", "auto", "cpu", torch.empty(0)) == "reference"
    with pytest.raises(RuntimeError, match="not built"):
        _dispatch.resolve("op", "cpu", "cpu", torch.empty(0))


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("TEMPATTN_BACKEND", "reference")
    assert _dispatch.resolve("op", "auto", "cpu", torch.empty(0)) == "reference"
    monkeypatch.setenv("TEMPATTN_BACKEND", "turbo")
    with pytest.raises(ValueError, match="TEMPATTN_BACKEND"):
        _dispatch.resolve("op", "auto", "cpu", torch.empty(0))


def test_explicit_backend_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("TEMPATTN_BACKEND", "turbo")
    assert _dispatch.resolve("op", "reference", "cpu", torch.empty(0)) == "reference"


@pytest.mark.skipif(not tempattn.backends()["cpu"]["available"], reason="C++ CPU kernels not built")
def test_cpu_backend_refuses_gpu_tensors_by_device():
    assert "CPU tensors" in _dispatch._device_reason("cpu", torch.device("cuda"))
