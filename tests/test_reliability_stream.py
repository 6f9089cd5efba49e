"""lofi-stream under faults: sources that fail alone, a source that stalls, Ctrl-C once and twice.

The stalled source is a local HTTP server that sends the first half of an MPEG-TS video and then
holds the connection open without sending more, as a camera or network stream that hangs does.
"""

from __future__ import annotations

import http.server
import json
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

STREAM = "from lofi.runtime.cli import stream_cli; stream_cli()"


def stream(*args: str) -> subprocess.Popen:
    code = f"import sys; sys.argv = ['lofi-stream', *sys.argv[1:]]; {STREAM}"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_stream(*args: str) -> subprocess.CompletedProcess:
    proc = stream(*args)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def ts_video(tmp_path_factory) -> bytes:
    """Ten seconds of moving noise at 8 fps as MPEG-TS (readable from any prefix)."""
    path = tmp_path_factory.mktemp("ts") / "v.ts"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("mpeg2video", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for _ in range(80):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path.read_bytes()


class Stalled(str):
    """The source's URL; `sent` is set once the half has gone out and the stall begins."""

    sent: threading.Event


@pytest.fixture
def stalled_url(ts_video) -> Iterator[Stalled]:
    """An http:// source that sends half its video and then nothing more (until the test ends)."""
    release, sent = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(ts_video)))
            self.end_headers()
            self.wfile.write(ts_video[: len(ts_video) // 2])
            self.wfile.flush()
            sent.set()
            release.wait(120)

        def log_message(self, *args) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = Stalled(f"http://127.0.0.1:{server.server_address[1]}/cam.ts")
    url.sent = sent
    yield url
    release.set()
    server.shutdown()
    server.server_close()


def test_failing_sources_fail_alone(tmp_path, tiny_bundle, tiny_synth):
    good = [str(tiny_synth / "videos" / f"synth_val_000{i}.mp4") for i in (0, 1)]
    (tmp_path / "notes.txt").write_text("not a video")
    sources = [good[0], str(tmp_path / "missing.mp4"), str(tmp_path / "notes.txt"), good[1]]
    res, st = tmp_path / "r.json", tmp_path / "s.json"
    p = run_stream(
        *sources, "--bundle", str(tiny_bundle), "--results", str(res), "--stats", str(st)
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    err = lines(p.stderr)
    assert len(err) == 3 and err[0].startswith("error:") and "missing.mp4" in err[0]
    assert err[1].startswith("error:") and "notes.txt" in err[1]
    assert "2 failed" in err[2]
    events = [json.loads(x) for x in lines(p.stdout)]
    assert {e["video"] for e in events} == {"synth_val_0000", "synth_val_0001"}
    assert set(json.loads(res.read_text())["results"]) == {"synth_val_0000", "synth_val_0001"}
    stats = json.loads(st.read_text())
    assert stats["videos"] == 2 and stats["failed"] == 2 and stats["cut_short"] == 0
    assert [s["status"] for s in stats["sources"]] == ["ok", "failed", "failed", "ok"]
    assert stats["events"] == len(events)


def test_a_stalled_source_ends_with_a_warning_and_is_marked_cut_short(
    tmp_path, tiny_bundle, stalled_url
):
    res, st = tmp_path / "r.json", tmp_path / "s.json"
    t0 = time.monotonic()
    p = run_stream(
        stalled_url,
        "--bundle",
        str(tiny_bundle),
        "--timeout",
        "1",
        "--reconnect",
        "0",
        "--results",
        str(res),
        "--stats",
        str(st),
    )
    assert time.monotonic() - t0 < 60
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    warning = [x for x in lines(p.stderr) if x.startswith("warning:")]
    assert len(warning) == 1 and "stalled" in warning[0] and "cam.ts" in warning[0]
    stats = json.loads(st.read_text())
    (record,) = stats["sources"]
    assert record["status"] == "cut_short" and "stalled" in record["reason"]
    assert stats["cut_short"] == 1 and 0 < record["seconds"] < 10  # half of a 10 s video
    assert "cam.ts" in json.loads(res.read_text())["results"]


def test_ctrl_c_during_a_stall_stops_at_once_and_writes_the_files(
    tmp_path, tiny_bundle, stalled_url
):
    res, st = tmp_path / "r.json", tmp_path / "s.json"
    proc = stream(
        stalled_url,
        "--bundle",
        str(tiny_bundle),
        "--timeout",
        "100",
        "--results",
        str(res),
        "--stats",
        str(st),
    )
    assert stalled_url.sent.wait(60)
    time.sleep(2)  # the first half is decoded; then it waits for data
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, "the stop waited for the stalled read"
    assert proc.returncode == 130 and "Traceback" not in err, err
    stats = json.loads(st.read_text())
    assert stats["stopped_early"] and stats["sources"][0]["status"] == "stopped"
    assert "cam.ts" in json.loads(res.read_text())["results"]


BLOCKED = """
import sys
from lofi.runtime.signals import graceful_stop
from lofi.runtime.decode import VideoReader
with graceful_stop():
    print("ready", flush=True)
    for _ in VideoReader(sys.argv[1], 8.0, timeout=100):
        pass
"""


def test_second_ctrl_c_aborts_at_once_even_inside_a_blocked_read(stalled_url):
    # the main thread sits in FFmpeg's read (no Python bytecode runs, so no Python signal
    # handler either); the second Ctrl-C must still end the process at once
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED, stalled_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    assert stalled_url.sent.wait(60)
    time.sleep(2)  # the first half is decoded; then the read blocks
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first one only asks for a stop
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert lines(err) == [
        "stopping: finishing the current video (again to abort)",
        "error: aborted",
    ]


def test_source_failing_in_the_localizer_fails_alone(tiny_bundle, tiny_synth, monkeypatch):
    # a fault past the decoder (here: the first video's localizer) must not take the run down
    import io

    from lofi.runtime import pipeline
    from lofi.runtime.errors import LofiError
    from lofi.runtime.models import BundleModels

    real = pipeline.make_localizer

    def flaky(models, vid, *args, **kw):
        loc = real(models, vid, *args, **kw)
        if vid == "synth_val_0000":
            loc.close = lambda: (_ for _ in ()).throw(LofiError("head output has NaN"))
        return loc

    monkeypatch.setattr(pipeline, "make_localizer", flaky)
    videos = [str(tiny_synth / "videos" / f"synth_val_000{i}.mp4") for i in (0, 1)]
    err = io.StringIO()
    results, stats = pipeline.stream_sources(BundleModels(tiny_bundle), videos, quiet=True, err=err)
    assert list(results) == ["synth_val_0001"] and stats["failed"] == 1
    assert lines(err.getvalue()) == [f"error: {videos[0]}: head output has NaN"]
    assert Path(videos[0]).name in stats["sources"][0]["reason"]
