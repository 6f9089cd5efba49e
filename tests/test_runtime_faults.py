"""lofi-stream survives damaged files and flaky live sources: corrupt packets skipped and
counted, truncated files keep their readable part, an index lost with the tail is refused in one
line, an unreachable source fails within the open timeout, a dropped live source is reopened."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from lofi.runtime.decode import read_video
from lofi.runtime.models import BundleModels
from lofi.runtime.streaming import localize_offline

from tests.test_reliability_stream import lines, run_stream
from tests.test_runtime_pipeline import assert_same, render_long


def remux(src: Path, dst: Path, fmt: str, options: dict | None = None) -> Path:
    """The same packets in another container (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt, options=options or {}) as out:
        s = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = s
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 60-75 s Synth-TAL video (index at the end, as libx264 + mp4 write it)."""
    return Path(render_long(tmp_path_factory.mktemp("faults"), 1, (60.0, 75.0), seed=9)[0])


def stream_json(tmp_path: Path, bundle: Path, *sources: str, extra: tuple = ()):
    res, st = tmp_path / "r.json", tmp_path / "s.json"
    p = run_stream(
        *sources, "--bundle", str(bundle), "--results", str(res), "--stats", str(st), *extra
    )
    results = json.loads(res.read_text())["results"] if res.is_file() else None
    stats = json.loads(st.read_text()) if st.is_file() else None
    return p, results, stats


def offline_of(bundle: Path, path: Path, video: str, frames: int | None = None) -> list:
    models = BundleModels(bundle)
    m = models.manifest
    all_frames = read_video(path, m.grid.fps, (m.height, m.width))
    return localize_offline(models, all_frames[:frames], video)[0]


def as_segments(rows: list[dict], video: str) -> list:
    from lofi.runtime.annotations import Segment

    return [Segment(video, r["label"], *r["segment"], r["score"]) for r in rows]


@pytest.mark.parametrize("fmt,suffix", [("mp4", ".mp4"), ("matroska", ".mkv")])
def test_a_truncated_file_with_its_index_first_keeps_its_readable_part(
    tmp_path, tiny_bundle, video, fmt, suffix
):
    opts = {"movflags": "+faststart"} if fmt == "mp4" else {}
    whole = remux(video, tmp_path / f"whole{suffix}", fmt, opts)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    p, results, stats = stream_json(tmp_path, tiny_bundle, str(cut))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    (warning,) = [x for x in lines(p.stderr) if x.startswith("warning:")]
    assert "cut" + suffix in warning and "truncated" in warning
    (record,) = stats["sources"]
    assert record["status"] == "damaged" and stats["damaged"] == 1 == stats["warnings"]
    full = len(read_video(whole, 8.0)) / 8.0
    assert 0.3 * full < record["seconds"] < 0.7 * full
    # the readable part streams as its frames would offline
    want = offline_of(tiny_bundle, whole, "cut", round(record["seconds"] * 8))
    assert len(want) > 10
    assert_same(as_segments(results["cut"], "cut"), want, seconds=5e-4)


def test_an_mp4_whose_index_was_in_the_lost_tail_is_refused_in_one_line(
    tmp_path, tiny_bundle, video
):
    data = video.read_bytes()
    cut = tmp_path / "tail.mp4"
    cut.write_bytes(data[: len(data) // 2])
    p, _, stats = stream_json(tmp_path, tiny_bundle, str(cut))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and "tail.mp4" in line and "index" in line
    assert "lost tail" in line and stats["failed"] == 1


def test_corrupt_bytes_mid_file_are_skipped_and_the_rest_streams(tmp_path, tiny_bundle, video):
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    p, results, stats = stream_json(tmp_path, tiny_bundle, str(bad))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    (warning,) = [x for x in lines(p.stderr) if x.startswith("warning:")]
    assert "bad.mp4" in warning and "corrupt packet" in warning
    (record,) = stats["sources"]
    assert record["status"] == "damaged" and record["corrupt_packets"] > 0
    assert stats["warnings"] == 1
    assert stats["corrupt_packets"] == record["corrupt_packets"]
    intact = offline_of(tiny_bundle, video, "bad")
    duration = len(read_video(video, 8.0)) / 8.0
    assert abs(record["seconds"] - duration) < 0.2  # time stays aligned over the gap
    got = results["bad"]
    # the part after the damage streams too (stopping at the damage kept about half)
    assert max(r["segment"][1] for r in got) > 0.9 * duration
    assert len(got) >= 0.9 * len(intact)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (an unresponsive camera)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_an_unreachable_source_fails_in_one_line_within_the_open_timeout(
    tmp_path, tiny_bundle, silent_server
):
    url = f"rtsp://127.0.0.1:{silent_server}/stream"
    t0 = time.monotonic()
    p, _, stats = stream_json(tmp_path, tiny_bundle, url, extra=("--open-timeout", "1"))
    assert time.monotonic() - t0 < 15  # the interpreter and the bundle load take most of it
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and url in line and "1 s" in line
    assert stats["failed"] == 1 and stats["reconnects"] == 0


class Flaky(str):
    """The URL of a live source; `connections` counts the times it was opened."""

    connections: list


@pytest.fixture
def flaky_url(video) -> Iterator[Flaky]:
    """An http:// MPEG-TS source that drops mid-stream the first time (the connection is cut
    after half the bytes) and plays whole when reopened."""
    ts = remux(video, video.with_suffix(".ts"), "mpegts").read_bytes()
    connections: list = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            connections.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Length", str(len(ts)))
            self.end_headers()
            if len(connections) == 1:
                self.wfile.write(ts[: len(ts) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(ts)

        def log_message(self, *args) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = Flaky(f"http://127.0.0.1:{server.server_address[1]}/cam.ts")
    url.connections = connections
    yield url
    server.shutdown()
    server.server_close()


def test_a_live_source_that_drops_is_reopened_and_the_gap_recorded(
    tmp_path, tiny_bundle, video, flaky_url
):
    p, results, stats = stream_json(tmp_path, tiny_bundle, flaky_url, extra=("--reconnect", "2"))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert len(flaky_url.connections) == 2
    warned = [x for x in lines(p.stderr) if x.startswith("warning:")]
    (warning,) = [x for x in warned if "reconnected after" in x]
    assert "cam.ts" in warning and "sent again dropped" in warning
    (record,) = stats["sources"]
    assert record["reconnects"] == 1 == stats["reconnects"]
    # the frame the drop cut in two was decoded with concealed errors: damage, said once
    assert record["status"] == "damaged" and record["concealed_frames"] == 1
    assert len(warned) == 2 and "concealed" in record["reason"]
    (gap,) = record["gaps"]
    duration = len(read_video(video, 8.0)) / 8.0
    assert 0.3 * duration < gap["at"] < 0.7 * duration and gap["seconds"] >= 0.5  # the backoff
    # the server sends the whole file again: what it already sent is dropped, not shown twice
    assert gap["replayed_frames"] >= 0.9 * gap["at"] * 8
    assert abs(record["seconds"] - duration) < 0.5
    assert results["cam.ts"]


def test_without_reconnect_a_drop_ends_the_source_cut_short(tmp_path, tiny_bundle, flaky_url):
    p, _, stats = stream_json(tmp_path, tiny_bundle, flaky_url, extra=("--reconnect", "0"))
    assert p.returncode == 1 and len(flaky_url.connections) == 1
    assert stats["sources"][0]["status"] == "cut_short" and stats["cut_short"] == 1
