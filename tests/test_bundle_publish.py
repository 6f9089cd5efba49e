"""lofi-export publishes a bundle whole or not at all: SIGTERM exits 130 leaving no partial
folder, a publish is never cut in two, the runtime's own load must accept the bundle first, a
diverged checkpoint (non-finite weights) is refused naming the tensor, and parity fails on NaN."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lofi.runtime.errors import LofiError


def _checkpoint_with(random_checkpoint: Path, tmp_path: Path, edit) -> Path:
    from lofi.trainer.checkpoint import save_checkpoint

    ckpt = torch.load(random_checkpoint, weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k != "format"})
    return path


def test_sigterm_exits_130_and_publishes_nothing(random_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    code = "import sys; from lofi.export.cli import main; sys.argv = ['lofi-export', *sys.argv[1:]]; main()"
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(random_checkpoint), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / "bundle.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the export is under way once it made its partial folder
    assert partial.exists(), "the export never started"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted"], err
    assert not out.exists() and not partial.exists()


def test_a_signal_during_publish_waits_until_the_bundle_is_whole(tmp_path, monkeypatch):
    from lofi.export import publish as pub

    final, partial = tmp_path / "b", tmp_path / "b.partial"
    final.mkdir()
    (final / "manifest.json").write_text("old")
    partial.mkdir()
    (partial / "manifest.json").write_text("new")
    real = pub.shutil.rmtree

    def signalled_midway(path, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # lands while the old bundle is being removed
        real(path, *a, **k)

    monkeypatch.setattr(pub.shutil, "rmtree", signalled_midway)
    with pub.stop_signals(), pytest.raises(KeyboardInterrupt):
        pub.publish(partial, final)
    assert (final / "manifest.json").read_text() == "new" and not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("swap", [True, False])
def test_publish_replaces_a_previous_bundle(tmp_path, monkeypatch, swap):
    from lofi.export import publish as pub

    if not swap:  # systems without an atomic exchange of two folders
        monkeypatch.setattr(pub, "_exchange", lambda a, b: False)
    final, partial = tmp_path / "b", tmp_path / "b.partial"
    for folder, text in ((final, "old"), (partial, "new")):
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
    pub.publish(partial, final)
    assert (final / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_non_finite_weights_are_refused_naming_the_tensor(random_checkpoint, tmp_path):
    from lofi.export.bundle_writer import export_bundle

    def diverge(ckpt):
        ckpt["head"]["cls_out.weight"].view(-1)[5] = float("nan")

    path = _checkpoint_with(random_checkpoint, tmp_path, diverge)
    with pytest.raises(LofiError, match=r"head tensor cls_out.weight has 1 non-finite value"):
        export_bundle(path, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_the_runtime_must_accept_the_bundle_before_it_is_published(
    random_checkpoint, tiny_bundle, tmp_path, monkeypatch
):
    # an export whose manifest the runtime would refuse (here: a label given twice, its digest
    # consistent) stays at OUT.partial and is not published
    import json
    import shutil

    from lofi.export import bundle_writer
    from lofi.runtime.bundle import DIGEST_KEY, manifest_digest

    def write(ckpt, cfg, encoder, head, out, *rest):
        shutil.copytree(tiny_bundle, out, dirs_exist_ok=True)
        data = json.loads((out / "manifest.json").read_text())
        data["labels"] = ["a", "b", "a", "d"]
        data[DIGEST_KEY] = manifest_digest(data)
        (out / "manifest.json").write_text(json.dumps(data))
        return json.loads((out / "parity.json").read_text())

    monkeypatch.setattr(bundle_writer, "_write", write)
    with pytest.raises(LofiError, match=r"runtime refuses .*labels\[2\] 'a' is given twice"):
        bundle_writer.export_bundle(random_checkpoint, tmp_path / "b")
    assert not (tmp_path / "b").exists() and (tmp_path / "b.partial").is_dir()


def test_max_abs_err_fails_on_nan_and_inf():
    from lofi.export.parity import max_abs_err

    a = np.zeros(4, np.float32)
    assert max(0.0, float("nan")) == 0.0  # why a plain max() cannot be trusted
    assert max_abs_err(a, a + 1e-6) == pytest.approx(1e-6)
    for bad in (float("nan"), float("inf")):
        b = a.copy()
        b[2] = bad
        assert max_abs_err(a, b) == math.inf and max_abs_err(b, a) == math.inf
    assert max_abs_err(a, np.zeros(5, np.float32)) == math.inf


def test_parity_fails_when_onnx_runtime_returns_nan(tiny_bundle, random_checkpoint, monkeypatch):
    from lofi.export import parity
    from lofi.trainer.checkpoint import checkpoint_config, load_checkpoint, models_from_checkpoint

    class NanBackend(parity.OrtBackend):
        def __call__(self, x):
            outs = super().__call__(x)
            outs[0].flat[0] = np.nan
            return outs

    monkeypatch.setattr(parity, "OrtBackend", NanBackend)
    ckpt = load_checkpoint(random_checkpoint)
    encoder, head = models_from_checkpoint(ckpt, random_checkpoint)
    d = checkpoint_config(ckpt, random_checkpoint).data
    report = parity.check_parity(tiny_bundle, encoder, head, d.mean, d.std, d.k, 32, 32, "fp32")
    assert report["ok"] is False
    assert report["encoder_max_abs_err"] == math.inf and report["head_max_abs_err"] == math.inf
