"""`lofi-data prepare` keeps what it did: the index is written as it goes, a missing or broken
video is skipped and reported, and a second run continues where the first stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lofi.runtime.errors import LofiError
from lofi.trainer.data import FrameCache, prepare_cache


def gt(tmp_path: Path, ids: list[str]) -> Path:
    db = {
        v: {
            "subset": "training",
            "duration": 10.0,
            "annotations": [{"segment": [1.0, 3.0], "label": "a"}],
        }
        for v in ids
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": db}))
    return path


def videos(tmp_path: Path, tiny_synth: Path, names: list[str]) -> Path:
    root = tmp_path / "videos"
    root.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        shutil.copy(tiny_synth / "videos" / f"synth_val_000{i % 2}.mp4", root / f"{name}.mp4")
    return root


def prepare(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from lofi.trainer.cli import data_cli; sys.argv = ['lofi-data', *sys.argv[1:]]; data_cli()"
    return subprocess.run(
        [sys.executable, "-c", code, "prepare", *args], capture_output=True, text=True, timeout=300
    )


def test_missing_and_broken_videos_are_skipped_reported_and_resumed(tmp_path, tiny_synth):
    root = videos(tmp_path, tiny_synth, ["a", "c"])
    (root / "b.mp4").write_text("not a video")
    ann, out = gt(tmp_path, ["a", "b", "c", "d"]), tmp_path / "cache"
    p = prepare(str(ann), str(root), str(out), "--size", "16x16")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    err = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(err) == 2 and all(x.startswith("error: skipped video") for x in err)
    assert "'b'" in err[0] and "'d'" in err[1] and "not found" in err[1]
    assert "2 decoded, 0 already there, 2 skipped" in p.stdout
    index = json.loads((out / "index.json").read_text())
    assert set(index["videos"]) == {"a", "c"} and set(index["skipped"]) == {"b", "d"}
    assert len(FrameCache(out).frames("c")) > 0

    # the missing videos turn up: a second run decodes only them
    videos(tmp_path, tiny_synth, ["b", "d"])
    before = (out / "a.jpgs").stat().st_mtime_ns
    p = prepare(str(ann), str(root), str(out), "--size", "16x16")
    assert p.returncode == 0, p.stderr
    assert "2 decoded, 2 already there, 0 skipped" in p.stdout
    index = json.loads((out / "index.json").read_text())
    assert set(index["videos"]) == {"a", "b", "c", "d"} and index["skipped"] == {}
    assert (out / "a.jpgs").stat().st_mtime_ns == before


def test_an_interrupted_run_leaves_an_index_and_resumes(tmp_path, tiny_synth):
    root = videos(tmp_path, tiny_synth, ["a", "b", "c"])
    ann, out = gt(tmp_path, ["a", "b", "c"]), tmp_path / "cache"

    def interrupt_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_cache(ann, root, out, 8.0, (16, 16), interrupt_after_two)
    assert set(FrameCache(out).index["videos"]) == {"a", "b"}
    report = prepare_cache(ann, root, out, 8.0, (16, 16))
    assert report.resumed == ["a", "b"] and report.decoded == ["c"]
    assert not list(out.glob("*.tmp"))


def test_a_cache_of_another_size_is_refused_and_strict_mode_raises(tmp_path, tiny_synth):
    root = videos(tmp_path, tiny_synth, ["a"])
    ann, out = gt(tmp_path, ["a", "zz"]), tmp_path / "cache"
    with pytest.raises(LofiError, match="video 'zz'.*not found"):
        prepare_cache(ann, root, out, 8.0, (16, 16))
    assert set(FrameCache(out).index["videos"]) == {"a"}  # the one before it is kept
    with pytest.raises(LofiError, match="decoded at 8 fps, 16x16"):
        prepare_cache(ann, root, out, 8.0, (32, 32), skip_bad=True)


def test_a_damaged_index_is_one_line(tmp_path):
    (tmp_path / "index.json").write_text('{"fps": "fast", "videos": {}}')
    with pytest.raises(LofiError, match="index .* is damaged"):
        FrameCache(tmp_path)
