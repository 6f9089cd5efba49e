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


def _torch_zip(tmp_path: Path, entries: dict[str, bytes], method=None) -> Path:
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", method or zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _never_loaded(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.load ran on a file the archive check should refuse")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_compressed_zip_bomb_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    import zipfile

    # 256 MiB of zeros deflate to about 250 KB; torch.load would allocate what the entry claims
    path = _torch_zip(
        tmp_path, {"archive/data.pkl": b"\0" * (256 << 20)}, method=zipfile.ZIP_DEFLATED
    )
    assert path.stat().st_size < 1 << 20
    _never_loaded(monkeypatch)
    from lofi.trainer.checkpoint import load_checkpoint

    with pytest.raises(LofiError, match=r"refusing checkpoint .*data.pkl' is compressed"):
        load_checkpoint(path)


def test_entries_claiming_more_than_the_file_holds_are_refused(tmp_path, monkeypatch):
    # a stored entry whose directory record claims 3 GiB (the bytes patched in the central
    # directory, as a hostile file would): torch's reader would allocate the claim first
    import struct

    path = _torch_zip(tmp_path, {"archive/data.pkl": b"x" * 100})
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 3 << 30)  # uncompressed size
    path.write_bytes(bytes(raw))
    _never_loaded(monkeypatch)
    from lofi.trainer.checkpoint import load_checkpoint

    with pytest.raises(LofiError, match=r"data.pkl' claims 3221225472 bytes in a file of \d+"):
        load_checkpoint(path)


def test_too_many_entries_and_non_zip_files_are_refused(tmp_path, monkeypatch):
    from lofi.trainer import checkpoint

    _never_loaded(monkeypatch)
    monkeypatch.setattr(checkpoint, "MAX_ENTRIES", 8)
    path = _torch_zip(tmp_path, {f"archive/data/{i}": b"" for i in range(9)})
    with pytest.raises(LofiError, match="9 entries"):
        checkpoint.load_checkpoint(path)
    path.write_bytes(b"\x80\x02}q\x00.")  # a bare pickle (legacy format): sizes unchecked
    with pytest.raises(LofiError, match="not a PyTorch zip archive"):
        checkpoint.load_checkpoint(path)


def test_a_pickle_claiming_a_huge_storage_is_refused_without_allocating(tmp_path):
    # data.pkl says the tensor's storage holds 2**60 bytes; its record holds 40. Refused by the
    # record-size check before any allocation (an allocation of 2**60 bytes would fail with an
    # out-of-memory error instead, and one of some GiB would be made)
    import pickle
    import pickletools
    import zipfile

    from lofi.trainer.checkpoint import load_checkpoint, save_checkpoint

    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.zeros(10)})
    with zipfile.ZipFile(good) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    pkl = entries[name]
    ops = list(pickletools.genops(pkl))
    # the storage's element count: the integer right before the persistent id's TUPLE
    at = (
        next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID") - 2
    )  # ... BININT1 numel, TUPLE, BINPUT, BINPERSID
    while ops[at][0].name not in ("BININT1", "BININT2", "BININT"):
        at -= 1
    op, _, pos = ops[at]
    size = len(pickle.dumps(10, protocol=2)) - 3  # the opcode's own bytes (no PROTO/STOP)
    huge = (1 << 60).to_bytes(8, "little") + b"\0"
    entries[name] = pkl[:pos] + bytes([pickle.LONG1[0], len(huge)]) + huge + pkl[pos + size :]
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_STORED) as z:
        for n, data in entries.items():
            z.writestr(n, data)
    assert bomb.stat().st_size < 4096
    with pytest.raises(LofiError, match=r"cannot read checkpoint .*record size") as err:
        load_checkpoint(bomb)
    assert "\n" not in str(err.value)


def test_pretrained_weights_get_the_same_zip_checks(tmp_path, monkeypatch):
    """model.weights files are user files too: a compressed bomb is refused before torch.load."""
    import zipfile

    from lofi.trainer.pretrained import _read

    path = _torch_zip(
        tmp_path, {"archive/data.pkl": b"\0" * (64 << 20)}, method=zipfile.ZIP_DEFLATED
    )
    _never_loaded(monkeypatch)
    with pytest.raises(LofiError, match=r"refusing pretrained weights .*data.pkl' is compressed"):
        _read(path)
