"""What a run reports: events final long before the end with their latency measured, the
per-stage stats, a status line on a terminal only; and the new modules stay torch-free."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

import numpy as np
from lofi.runtime.models import BundleModels
from lofi.runtime.pipeline import Options, Pipeline
from lofi.runtime.stats import Reservoir, StatusLine

from tests.test_runtime_pipeline import render_long
from tests.test_torch_free import BLOCK


def sparse_head(models: BundleModels):
    """A head that fires once per finest-level position with a one-position reach: segments
    only touch, so each is final as soon as the frontier passes it (the random test bundle's
    segments overlap all along a video, so nothing would be final before its end)."""
    m = models.manifest

    def head(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for level, stride in enumerate(m.strides):
            n = len(x) // stride
            cls = np.full((len(m.labels), n), -20.0, np.float32)
            if level == 0:
                cls[0] = 5.0
            out.append((cls, np.full((2, n), 0.5, np.float32)))
        return out

    return head


def test_events_are_final_long_before_the_end_and_latency_is_measured(tiny_bundle, tmp_path):
    (video,) = render_long(tmp_path, 1, (90.0, 90.0), seed=2)
    models = BundleModels(tiny_bundle)
    models.head = sparse_head(models)
    m = models.manifest
    seen: list[tuple[float, float, float]] = []
    pipe = Pipeline(
        models, [video], on_event=lambda seg, now, lat: seen.append((seg.end, now, lat))
    )
    pipe.run()
    end, emitted, latency = np.array(seen).T
    # final window by window (each head window + context spans 36 s of this bundle's video)
    assert len(seen) > 100 and len(set(emitted[emitted < emitted.max()])) >= 4
    # an event waits at most for the rest of its head window, the right context, the reach
    # and one encoder batch (in snippets), never for the video's end
    wait = (m.window + m.context + m.max_reach + 16 + m.grid.k) * m.grid.hop / m.grid.fps
    assert np.all(emitted - end <= wait)
    stats = pipe.stats()
    lat = stats["latency_seconds"]
    assert lat["count"] == len(seen) and lat["max"] == round(latency.max(), 4)
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]


def test_reservoir_percentiles_stay_bounded():
    r = Reservoir(size=100)
    for x in range(10000):
        r.add(float(x))
    s = r.summary()
    assert len(r.values) == 100 and s["count"] == 10000 and s["max"] == 9999
    assert 3000 < s["p50"] < 7000 < s["p95"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_status_line_is_drawn_on_a_terminal_only(tiny_bundle, tiny_synth):
    videos = [str(tiny_synth / "videos" / f"synth_val_000{i}.mp4") for i in (0, 1)]
    for out, drawn in ((io.StringIO(), False), (Tty(), True)):
        pipe = Pipeline(BundleModels(tiny_bundle), videos, status=out, options=Options())
        pipe.status.every = 0.0
        pipe.run()
        assert ("\r" in out.getvalue()) is drawn
        if drawn:
            assert "/2 videos [" in out.getvalue() and "x real time" in out.getvalue()
    line = StatusLine(Tty(), every=0.0)
    line.show("long text here")
    line.show("short")
    assert line.out.getvalue().endswith("\rshort         ")  # the longer line is wiped


def test_lofi_stream_on_a_terminal_shows_a_live_line_and_none_in_a_log(
    tiny_bundle, tiny_synth, tmp_path
):
    video = str(tiny_synth / "videos" / "synth_val_0000.mp4")
    code = "import sys; sys.argv = ['lofi-stream', *sys.argv[1:]]; " + (
        "from lofi.runtime.cli import stream_cli; stream_cli()"
    )
    args = [sys.executable, "-c", code, video, "--bundle", str(tiny_bundle), "--quiet"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    on_tty = b"".join(chunks).decode()
    assert proc.returncode == 0 and "0/1 videos [" in on_tty
    assert "\r" in on_tty and "streamed 1 video(s)" in on_tty
    logged = subprocess.run(args + ["--stats", str(tmp_path / "s.json")], capture_output=True)
    assert logged.returncode == 0 and b"\r" not in logged.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert set(stats["stages"]) >= {"decode", "encoder", "head", "postprocess"}
    assert stats["latency_seconds"]["count"] == stats["events"] > 0


def test_the_service_modules_import_and_run_without_torch(tiny_bundle, tiny_synth):
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    code = (
        BLOCK
        + f"""
import lofi.runtime.pipeline, lofi.runtime.sources, lofi.runtime.stats, lofi.runtime.signals
import lofi.runtime.localizer, lofi.runtime.postprocess, lofi.runtime.decode
from lofi.runtime import Localizer
assert Localizer({str(tiny_bundle)!r}).run({str(video)!r})
assert "torch" not in sys.modules
"""
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
