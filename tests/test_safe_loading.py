"""A checkpoint or weights file that needs arbitrary unpickling is refused, and its code never
runs: on export, --resume, a stage's init and pretrained weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lofi.runtime.errors import LofiError


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "lofi-tal-checkpoint", "encoder": Payload(marker)}, path)
    return path, marker


def test_the_payload_is_real(evil):
    # control: a full unpickle does run it, so the tests below would notice
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_export_refuses(evil, tmp_path):
    path, marker = evil
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lofi.export.cli import main; main()",
            str(path),
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing checkpoint" in lines[0] and str(path) in lines[0]
    assert not marker.exists()


def test_resume_init_and_weights_refuse(evil, tmp_path):
    from lofi.trainer.checkpoint import init_encoder, load_checkpoint
    from lofi.trainer.encoder import SnippetEncoder
    from lofi.trainer.run import Run
    from lofi.trainer.schema import Config

    path, marker = evil
    run = Run(tmp_path / "run", Config(), "lofi")
    run.ckpt_path.write_bytes(path.read_bytes())
    with pytest.raises(LofiError, match="refusing checkpoint"):
        run.resume()
    with pytest.raises(LofiError, match="refusing checkpoint"):
        init_encoder(SnippetEncoder("tiny", 2, 8), str(path))  # lofi.init / head.init
    with pytest.raises(LofiError, match="refusing checkpoint"):
        load_checkpoint(path)
    with pytest.raises(LofiError, match=str(path)):
        SnippetEncoder("resnet18", 2, weights=str(path))  # model.weights
    assert not marker.exists()


def test_checkpoints_load_weights_only(random_checkpoint):
    ckpt = torch.load(random_checkpoint, weights_only=True)
    assert ckpt["format"] == "lofi-tal-checkpoint" and ckpt["labels"] == ["a", "b", "c", "d"]
