"""ONNX Runtime GPU providers: the session must really get the provider asked for (no silent CPU
fallback), CUDA runs with I/O binding, the TensorRT provider keeps its engines in a cache folder.
onnxruntime-gpu is not installed here: a fake module stands in for it (tests only)."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
from lofi.runtime.backends import OrtBackend
from lofi.runtime.errors import LofiError


class FakeSession:
    granted: list[str] = []
    calls: list = []

    def __init__(self, path, opts, providers, provider_options, **kwargs):
        FakeSession.calls.append(("session", providers, provider_options, kwargs))
        if FakeSession.native_block:  # what ONNX Runtime writes when a provider cannot load
            print("*************** EP Error ***************")
            print(f"EP Error when using {providers}\nFalling back and retrying.")
            sys.stdout.flush()
            os.write(1, b"native block, line 1\nline 2\n")
            os.write(2, FakeSession.native_block)
        if FakeSession.fails:
            raise RuntimeError(FakeSession.fails)

    native_block = b""
    fails = ""

    def get_providers(self):
        return FakeSession.granted

    def get_inputs(self):
        return [types.SimpleNamespace(name="features", type="tensor(float)", shape=[1, 2])]

    def get_outputs(self):
        return [
            types.SimpleNamespace(name="a", type="tensor(float)", shape=[1, 2]),
            types.SimpleNamespace(name="b", type="tensor(float)", shape=[1, 2]),
        ]

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
    FakeSession.native_block = b""
    FakeSession.fails = ""
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
    _, providers, options, _ = FakeSession.calls[0]
    assert providers[0] == "TensorrtExecutionProvider"
    assert options[0]["trt_engine_cache_enable"] is True
    assert options[0]["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()


def test_the_engine_cache_is_per_bundle_digest(tiny_bundle, monkeypatch, tmp_path):
    from lofi.runtime.models import ort_trt_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = ort_trt_cache(tiny_bundle)
    assert path.parent == tmp_path / "lofi-tal" / "ort-trt" and len(path.name) == 16


LIBNVINFER = (
    b"2026-01-01 [E:onnxruntime:Default, provider_bridge_ort.cc:2251 TryGetProviderInfo_TensorRT] "
    b"Failed to load library libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: "
    b"cannot open shared object file: No such file or directory\n"
)


def test_a_provider_that_cannot_load_is_one_line_and_stdout_stays_clean(fake_ort, tmp_path, capfd):
    # onnxruntime-gpu 1.31's TensorRT provider with TensorRT 11 installed: the library does not
    # load, ONNX Runtime prints blocks to stdout and stderr and runs on CUDA instead
    FakeSession.granted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    FakeSession.native_block = LIBNVINFER
    with pytest.raises(LofiError) as err:
        OrtBackend(b"model", "ort-trt", cache=tmp_path / "cache", name="encoder.onnx")
    line = str(err.value)
    assert "\n" not in line and line.startswith("encoder.onnx: ONNX Runtime gave providers")
    assert (
        "instead of TensorrtExecutionProvider" in line and "libnvinfer.so.10: cannot open" in line
    )
    out, errs = capfd.readouterr()
    assert out == "" and errs == ""  # nothing of ONNX Runtime's reaches stdout (JSON events)
    assert FakeSession.calls[0][3] == {"enable_fallback": 0}  # no silent retry on other providers


def test_a_session_that_fails_is_one_line(fake_ort, capfd):
    FakeSession.fails = "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 35\nmore\nlines"
    FakeSession.native_block = b"native noise\n"
    with pytest.raises(
        LofiError, match=r"^cannot load head.onnx on device cuda: .*CUDA failure 35'?$"
    ):
        OrtBackend(b"model", "cuda", name="head.onnx")
    assert capfd.readouterr().out == ""


def test_warnings_of_a_session_that_loads_go_to_stderr(fake_ort, capfd):
    FakeSession.granted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    FakeSession.native_block = b"[W:onnxruntime] a warning\n"
    OrtBackend(b"model", "cuda")
    out, errs = capfd.readouterr()
    assert out == "" and "a warning" in errs


FAKE_TRT_PROVIDER = """
import os, sys
import onnxruntime as ort

real = ort.InferenceSession


class Session(real):
    # onnxruntime-gpu whose TensorRT provider cannot load: its blocks on stdout and stderr,
    # then a session on the next provider
    def __init__(self, model, opts=None, providers=None, provider_options=None, **kwargs):
        if providers and providers[0] == "TensorrtExecutionProvider":
            print("*************** EP Error ***************")
            print(f"EP Error when using {providers}")
            sys.stdout.flush()
            os.write(1, b"native block, line 1\\nline 2\\n")
            os.write(2, LIBNVINFER)
        super().__init__(model, opts, providers=["CPUExecutionProvider"], **kwargs)


ort.InferenceSession = Session
ort.get_available_providers = lambda: [
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
]
from lofi.runtime.cli import stream_cli

sys.argv = ["lofi-stream", *sys.argv[1:]]
stream_cli()
"""


def test_lofi_stream_stdout_stays_clean_when_a_provider_cannot_load(
    tiny_bundle, tiny_synth, tmp_path
):
    import subprocess

    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    code = f"LIBNVINFER = {LIBNVINFER!r}\n{FAKE_TRT_PROVIDER}"
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(video),
            "--bundle",
            str(tiny_bundle),
            "--device",
            "ort-trt",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )
    assert p.returncode == 1 and p.stdout == "", p.stdout  # stdout carries only JSON events
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: encoder.onnx: ONNX Runtime gave"), (
        p.stderr
    )
    assert "libnvinfer.so.10: cannot open shared object file" in lines[0]
    assert "pip install 'lofi-tal[ort-trt]'" in lines[0]
