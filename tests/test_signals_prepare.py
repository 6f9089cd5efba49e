"""SIGKILL or SIGTERM to `lofi-data prepare` leaves no worker process behind: a worker holds a
whole video's frames (a gigabyte on ActivityNet) and used to go on decoding for minutes after
its parent was gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# imported by every Python process started with this folder on PYTHONPATH, the spawned workers
# included: decoding a video blocks, so the workers are mid-video when the signal comes
SLOW_DECODE = """
import os
if os.environ.get("LOFI_TEST_SLOW_DECODE"):
    import time
    import lofi.trainer.frame_cache as fc

    def read_video(*args, **kwargs):
        time.sleep(120)

    fc.read_video = read_video
"""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st:
                parents[int(entry.name)] = st[0]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids still running (a zombie waiting for a reaper holds no memory)."""
    return {pid for pid in pids if (st := _stat(pid)) and st[1] != "Z"}


def start_prepare(tmp_path: Path, tiny_synth: Path) -> tuple[subprocess.Popen, set[int]]:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_DECODE)
    db = {f"v{i}": {"subset": "training", "duration": 10.0, "annotations": []} for i in range(4)}
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    root = tmp_path / "videos"
    root.mkdir()
    for i in range(4):
        (root / f"v{i}.mp4").symlink_to(tiny_synth / "videos" / "synth_val_0000.mp4")
    env = dict(os.environ, LOFI_TEST_SLOW_DECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    code = (
        "import sys; from lofi.trainer.cli import data_cli; sys.argv[0] = 'lofi-data'; data_cli()"
    )
    args = ["prepare", str(tmp_path / "gt.json"), str(root), str(tmp_path / "cache")]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--workers", "2", "--size", "16x16"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        family = descendants(proc.pid)
        workers = {p for p in family if "spawn_main" in _cmdline(p)}
        if len(workers) >= 2:
            return proc, family
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"prepare never had 2 workers running: {proc.communicate()}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def gone_within(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_sigkill_leaves_no_worker_behind(tmp_path, tiny_synth):
    proc, family = start_prepare(tmp_path, tiny_synth)
    time.sleep(0.5)  # the workers are inside their (blocking) decode now
    proc.kill()
    proc.wait(10)
    left = gone_within(family, 3.0)
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived prepare: {[_cmdline(p) for p in left]}"


def test_sigterm_stops_workers_and_exits_130_with_one_line(tmp_path, tiny_synth):
    proc, family = start_prepare(tmp_path, tiny_synth)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 10, "prepare waited for its workers' videos"
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: interrupted"], err
    assert not gone_within(family, 3.0)
    # the index was still written on the way out (no video finished: none listed)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["videos"] == {}
