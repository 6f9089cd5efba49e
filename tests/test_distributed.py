"""DDP: two processes (gloo, CPU) train to the same weights as one process with the whole batch."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace

import torch
import yaml

from tests.conftest import tiny_config, with_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_with_the_whole_batch(tiny_caches, tmp_path):
    cfg = with_data(tiny_config(levels=2, head_dropout=0.0), tiny_caches)
    cfg.data.window = 8
    cfg.model = replace(cfg.model, max_reach=8, head_window=8)
    # batch_size is the global batch: 4 windows per step, 2 per process under torchrun
    cfg.lofi = replace(cfg.lofi, epochs=2, batch_size=4, schedule="short_cycle", short_every=1)
    # SGD: unlike Adam its step scales with the gradient, so a mis-scaled all-reduce shows
    cfg.lofi = replace(cfg.lofi, optimizer="sgd", lr=0.05, head_lr=0.05, momentum=0.9)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    common = ["-m", "lofi.trainer.cli", "lofi", "--config", str(path), "--device", "cpu"]
    one = subprocess.run(
        [sys.executable, *common, "--run-dir", str(tmp_path / "one")],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        f"--master-port={_free_port()}",
        "--master-addr=127.0.0.1",
    ]
    two = subprocess.run(
        [*torchrun, *common, "--run-dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    for part in ("encoder", "head"):
        for k, v in a[part].items():
            if v.is_floating_point():
                assert torch.allclose(v, b[part][k], rtol=1e-4, atol=1e-5), f"{part}.{k}"
    # the losses logged are the global batch's, so the two runs' logs agree too
    for ea, eb in zip(a["metrics"]["epochs"], b["metrics"]["epochs"]):
        assert abs(ea["loss"] - eb["loss"]) <= 1e-4 * max(1.0, abs(ea["loss"]))
    assert not (tmp_path / "two" / "train.log").read_text().count("Traceback")
