"""ONNX Runtime GPU providers: the session must really get the provider asked for (no silent CPU
fallback), CUDA runs with I/O binding, the TensorRT provider keeps its engines in a cache folder.
onnxruntime-gpu is not installed here: a fake module stands in for it (tests only)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from lofi.runtime.backends import OrtBackend
from lofi.runtime.errors import LofiError


class FakeSession:
    granted: list[str] = []
    calls: list = []

    def __init__(self, path, opts, providers, provider_options):
        FakeSession.calls.append(("session", providers, provider_options))

    def get_providers(self):
        return FakeSession.granted

    def get_inputs(self):
        return [types.SimpleNamespace(name="features")]

    def get_outputs(self):
        return [types.SimpleNamespace(name="a"), types.SimpleNamespace(name="b")]

    def run(self, names, feeds):
        return [feeds["features"] + 1, feeds["features"] * 2]

    def io_binding(self):
        session = self

        class Binding:
            def bind_cpu_input(self, name, x):
                FakeSession.calls.append(("input", name))
                self.x = x

            def bind_output(self, name, device):
                FakeSession.calls.append(("output", name, device))

            def copy_outputs_to_cpu(self):
                return session.run(None, {"features": self.x})

        return Binding()

    def run_with_iobinding(self, binding):
        FakeSession.calls.append(("run_with_iobinding",))


@pytest.fixture
def fake_ort(monkeypatch):
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    module = types.SimpleNamespace(
        InferenceSession=FakeSession,
        SessionOptions=lambda: types.SimpleNamespace(),
        get_available_providers=lambda: available,
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", module)
    FakeSession.calls = []
    return available


def test_a_cpu_fallback_is_refused(fake_ort, tmp_path):
    FakeSession.granted = ["CPUExecutionProvider"]
    with pytest.raises(LofiError, match="instead of CUDAExecutionProvider .*would run on the CPU"):
        OrtBackend(tmp_path / "m.onnx", "cuda")
    with pytest.raises(LofiError, match="instead of TensorrtExecutionProvider"):
        OrtBackend(tmp_path / "m.onnx", "ort-trt", cache=tmp_path / "cache")
    fake_ort.remove("CUDAExecutionProvider")
    with pytest.raises(LofiError, match="needs onnxruntime-gpu with CUDAExecutionProvider"):
        OrtBackend(tmp_path / "m.onnx", "cuda")


def test_cuda_runs_with_io_binding(fake_ort, tmp_path):
    FakeSession.granted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    b = OrtBackend(tmp_path / "m.onnx", "cuda")
    x = np.ones((1, 2), np.float32)
    a, c = b(x)
    assert (a == 2).all() and (c == 2).all()
    assert ("input", "features") in FakeSession.calls
    assert [c for c in FakeSession.calls if c[0] == "output"] == [
        ("output", "a", "cuda"),
        ("output", "b", "cuda"),
    ]
    assert ("run_with_iobinding",) in FakeSession.calls


def test_tensorrt_provider_caches_engines(fake_ort, tmp_path):
    FakeSession.granted = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    OrtBackend(tmp_path / "m.onnx", "ort-trt", cache=tmp_path / "cache")
    _, providers, options = FakeSession.calls[0]
    assert providers[0] == "TensorrtExecutionProvider"
    assert options[0]["trt_engine_cache_enable"] is True
    assert options[0]["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()


def test_the_engine_cache_is_per_bundle_digest(tiny_bundle, monkeypatch, tmp_path):
    from lofi.runtime.models import ort_trt_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = ort_trt_cache(tiny_bundle)
    assert path.parent == tmp_path / "lofi-tal" / "ort-trt" and len(path.name) == 16
