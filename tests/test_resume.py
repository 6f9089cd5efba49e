"""Runs that survive: a run killed mid-epoch by a real signal resumes to bit-identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from tests.conftest import tiny_config, with_data


def _config(tmp_path: Path, data: Path) -> Path:
    cfg = with_data(tiny_config(levels=2), data)
    cfg.data.window = 8  # many windows per video: several steps per epoch
    cfg.model = replace(cfg.model, max_reach=8, head_window=8)
    cfg.lofi = replace(cfg.lofi, epochs=6, batch_size=2, schedule="short_cycle", short_every=1)
    cfg.lofi.validate_every = 2
    cfg.train.checkpoint_every = 1
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _train(cfg: Path, run: Path, resume: bool = False) -> subprocess.Popen:
    args = ["lofi", "--config", str(cfg), "--run-dir", str(run), "--device", "cpu"]
    code = "import sys; from lofi.trainer.cli import train_cli; train_cli(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, *(["--resume"] if resume else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _progress(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=True)["progress"]
    except Exception:  # not written yet
        return None


def test_killed_mid_epoch_resumes_bit_identical(tiny_caches, tmp_path):
    cfg = _config(tmp_path, tiny_caches)
    straight = _train(cfg, tmp_path / "straight")
    killed = _train(cfg, tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    seen = None
    while time.time() < deadline and killed.poll() is None:
        p = _progress(ckpt) if ckpt.is_file() else None
        if p and p["step"] > 0 and p["epoch"] >= 1:
            os.kill(killed.pid, signal.SIGKILL)
            seen = p
            break
        time.sleep(0.005)
    killed.wait()
    assert seen is not None and killed.returncode == -signal.SIGKILL, "run ended before the kill"
    assert straight.wait() == 0, straight.stderr.read()
    resumed = _train(cfg, tmp_path / "killed", resume=True)
    assert resumed.wait() == 0, resumed.stderr.read()
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    for part in ("encoder", "head"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert a["progress"]["global_step"] == b["progress"]["global_step"]
    assert a["metrics"]["epochs"] == b["metrics"]["epochs"]
    assert (tmp_path / "killed" / "best.pt").is_file()
    assert (tmp_path / "killed" / "metrics.csv").read_text().startswith("epoch,loss")
