"""Live sources that lie: a FIFO with no writer (it must honour --open-timeout), a source that
sends data forever but never a decodable frame, and a reconnecting source that replays what it
already sent. Every generator is local (a FIFO, or 127.0.0.1) and bounded in bytes and time."""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import av
import numpy as np
import pytest
from lofi.runtime.decode import VideoReader
from lofi.runtime.errors import LofiError
from lofi.runtime.sources import ReconnectingReader

from tests.test_reliability_stream import lines
from tests.test_runtime_faults import stream_json
from tests.test_timelines import FIRST, SECOND, ts_part, values

GENERATOR_SECONDS = 20.0  # no generator here outlives this


def audio_only_ts(seconds: float = 4.0) -> bytes:
    """MPEG-TS whose PMT lists a video stream that never gets a packet, beside audio."""
    import io
    from fractions import Fraction

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as c:
        v = c.add_stream("mpeg2video", rate=8)
        v.width = v.height = 16
        v.pix_fmt = "yuv420p"
        a = c.add_stream("mp2", rate=48000)
        a.layout = "mono"
        for i in range(int(seconds * 48000 / 1152)):
            f = av.AudioFrame.from_ndarray(
                np.zeros((1, 1152), np.int16), format="s16", layout="mono"
            )
            f.sample_rate = 48000
            f.pts = i * 1152
            f.time_base = Fraction(1, 48000)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return buf.getvalue()


@pytest.fixture
def fifo(tmp_path) -> str:
    path = tmp_path / "cam.ts"
    os.mkfifo(path)
    return str(path)


def test_a_fifo_with_no_writer_fails_within_the_open_timeout(fifo):
    failed: list = []

    def read() -> None:
        try:
            list(VideoReader(fifo, 8.0, open_timeout=0.5))
        except LofiError as exc:
            failed.append((str(exc), time.monotonic() - t0))

    t0 = time.monotonic()
    thread = threading.Thread(target=read, daemon=True)  # a blocked open must not hang the test
    thread.start()
    thread.join(5)
    ((message, seconds),) = failed
    assert "cam.ts: no data within 0.5 s" in message and 0.4 < seconds < 3


def test_lofi_stream_on_a_fifo_with_no_writer_is_one_line(tmp_path, tiny_bundle, fifo):
    t0 = time.monotonic()
    p, _, stats = stream_json(tmp_path, tiny_bundle, fifo, extra=("--open-timeout", "1"))
    assert time.monotonic() - t0 < 30  # the interpreter and the bundle take most of it
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and fifo in line and "1 s" in line
    assert stats["failed"] == 1


def write_fifo(path: str, data: bytes, stall: float) -> threading.Thread:
    """A writer that sends `data`, then holds the FIFO open `stall` seconds and closes it."""

    def run() -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            time.sleep(stall)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_fifo_with_a_writer_streams_and_a_stalled_one_is_cut_short(fifo):
    # the whole stream, then the writer closes: every frame, read as a live source
    writer = write_fifo(fifo, ts_part(0.0, 40), 0.0)
    reader = VideoReader(fifo, 8.0, (16, 16), timeout=2.0)
    assert values(list(reader)) == FIRST and reader.cut_short is None
    writer.join(5)
    # half, then the writer stays silent: the read timeout holds (FFmpeg retries a
    # non-blocking read, so its timeout reaches it)
    data = ts_part(0.0, 40)
    write_fifo(fifo, data[: len(data) // 2], stall=GENERATOR_SECONDS)
    reader = VideoReader(fifo, 8.0, (16, 16), timeout=1.0)
    t0 = time.monotonic()
    got = list(reader)
    assert time.monotonic() - t0 < 5 and 0 < len(got) < 40
    assert "stalled" in reader.cut_short


@pytest.fixture
def endless_audio() -> Iterator[str]:
    """tcp://127.0.0.1 sending MPEG-TS audio (its video stream never gets a packet) until the
    client leaves or GENERATOR_SECONDS pass."""
    chunk = audio_only_ts()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            end = time.monotonic() + GENERATOR_SECONDS
            with conn:
                while not stop.is_set() and time.monotonic() < end:
                    try:
                        conn.sendall(chunk)
                    except OSError:
                        break
                    time.sleep(0.05)

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_a_source_that_sends_data_but_never_a_frame_is_refused_in_bounded_time(
    tmp_path, tiny_bundle, endless_audio
):
    t0 = time.monotonic()
    p, _, stats = stream_json(
        tmp_path, tiny_bundle, endless_audio, extra=("--timeout", "1", "--open-timeout", "5")
    )
    assert time.monotonic() - t0 < 40
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and endless_audio in line
    assert "no decodable frame for 3 s while data kept coming" in line
    assert stats["failed"] == 1


class Replayer:
    """http://127.0.0.1 serving MPEG-TS: connection 1 sends the first half of `first` and
    drops; connection 2 sends `second` whole."""

    def __init__(self, first: bytes, second: bytes) -> None:
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.connections += 1
                body = first[: len(first) // 2] if outer.connections == 1 else second
                self.send_response(200)
                self.send_header(
                    "Content-Length", str(len(first if outer.connections == 1 else body))
                )
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if outer.connections == 1:
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args) -> None:
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.ts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("replay", [True, False])
def test_a_reconnect_never_shows_a_frame_twice_nor_drops_a_restarted_clock(replay):
    whole = ts_part(0.0, 40)
    # a replay: the same stream again; a restart: other frames whose clock starts at 0 again
    source = Replayer(whole, whole if replay else ts_part(0.0, 40, second=True))
    try:
        reader = ReconnectingReader(source.url, 8.0, (16, 16), timeout=2.0, reconnect=2)
        got = values(list(reader))
    finally:
        source.close()
    assert source.connections == 2
    (gap,) = reader.gaps
    cut = round(gap["at"] * 8)
    assert 5 < cut < 35
    if replay:  # each frame once, in order: what was shown is not shown again
        assert got == FIRST and gap["replayed_frames"] >= cut - 2
        assert "sent again dropped" in gap["reason"]
    else:  # nothing of the new clock's frames is dropped
        assert got == FIRST[:cut] + SECOND and gap["replayed_frames"] == 0
