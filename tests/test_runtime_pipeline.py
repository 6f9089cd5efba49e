"""The pipeline (decode threads, shared encoder batches) equals offline inference exactly, alone
and with many streams at once, on long Synth-TAL videos; sources from folders and lists."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from lofi.runtime.decode import read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.pipeline import Options, Pipeline, stream_sources
from lofi.runtime.sources import expand_sources
from lofi.runtime.streaming import localize_offline


def render_long(folder: Path, count: int, seconds: tuple[float, float], seed: int) -> list[str]:
    """`count` Synth-TAL videos of 32x32 at 8 fps, each `seconds` long (min, max)."""
    from lofi.trainer.synth import UNTRIMMED_MOTIONS, SynthConfig, render_untrimmed, write_mp4

    cfg = SynthConfig(
        height=32, width=32, min_duration=seconds[0], max_duration=seconds[1], seed=seed
    )
    paths = []
    for i in range(count):
        frames, _ = render_untrimmed(cfg, "validation", i, UNTRIMMED_MOTIONS[:4])
        path = folder / f"long_{i}.mp4"
        write_mp4(path, frames, cfg.fps)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> list[str]:
    return render_long(tmp_path_factory.mktemp("long"), 3, (60.0, 90.0), seed=5)


@pytest.fixture(scope="module")
def offline(tiny_bundle, long_videos) -> dict:
    models = BundleModels(tiny_bundle)
    m = models.manifest
    out = {}
    for path in long_videos:
        frames = read_video(path, m.grid.fps, (m.height, m.width))
        out[Path(path).stem] = localize_offline(models, frames, Path(path).stem)[0]
    return out


def assert_same(got: list, want: list, seconds: float = 1e-5) -> None:
    """The same segments in the same order; head windows and the whole-video pass differ only in
    float32 rounding (the README's 1e-5 on outputs), which moves times and scores by ~1e-7.
    `seconds`: the tolerance on times (a results file rounds them to 1 ms)."""
    assert [(s.video, s.label) for s in got] == [(s.video, s.label) for s in want]
    for a, b in zip(got, want):
        assert abs(a.start - b.start) <= seconds and abs(a.end - b.end) <= seconds
        assert abs(a.score - b.score) <= 1e-6


@pytest.fixture(scope="module")
def alone(tiny_bundle, long_videos) -> dict:
    return stream_sources(BundleModels(tiny_bundle), long_videos, quiet=True)[0]


def test_streaming_equals_offline_on_long_videos(alone, offline):
    assert all(len(segs) > 20 for segs in offline.values())
    assert set(alone) == set(offline)
    for vid, segs in offline.items():
        assert_same(alone[vid], segs)


@pytest.mark.parametrize(
    "parallel,batch,workers", [(3, 16, 1), (2, 5, 1), (3, 64, 1), (3, 4, 3), (1, 2, 4)]
)
def test_parallel_streams_equal_each_stream_alone(
    tiny_bundle, long_videos, alone, parallel, batch, workers
):
    # a snippet's features depend neither on its batch mates nor on which call finished first:
    # bit for bit the single-stream run
    models = BundleModels(tiny_bundle)
    options = Options(parallel=parallel, encoder_batch=batch, encoder_workers=workers)
    results, stats = stream_sources(models, long_videos, quiet=True, options=options)
    assert results == alone
    assert stats["videos"] == 3 and stats["parallel"] == parallel
    assert stats["encoder_batch"]["max"] == batch and stats["encoder_workers"] == workers


def test_encoder_calls_run_at_once_and_each_stream_fails_once(tiny_bundle, long_videos):
    # every call fails here; one stream's failure leaving the others exact is
    # tests/test_pipeline_faults.py's
    models = BundleModels(tiny_bundle)
    encode, lock = models.encode, threading.Lock()
    running, most = [0], [0]

    def slow(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)  # ONNX Runtime lets go of the GIL while it computes; so does sleep
        with lock:
            running[0] -= 1
        return encode(x)

    models.encode = slow
    options = Options(parallel=3, encoder_workers=3)
    results, _ = stream_sources(models, long_videos[:2], quiet=True, options=options)
    assert most[0] > 1 and all(results.values())

    def broken(x):
        raise LofiError("encoder lost")

    models.encode = broken
    errors: list[str] = []
    pipe = Pipeline(models, long_videos, options=options, error=errors.append).run()
    assert sorted(r["status"] for r in pipe.records) == ["failed"] * 3
    assert len(errors) == 3 and all("encoder lost" in e for e in errors)


def test_backends_that_take_one_call_at_a_time_get_one_worker(tiny_bundle):
    models = BundleModels(tiny_bundle)
    models.concurrent = False  # as a TensorRT engine's context
    assert Pipeline(models, [], options=Options(encoder_workers=4)).opts.encoder_workers == 1


def test_parallel_streams_share_encoder_calls(tiny_bundle, long_videos):
    """Three streams at once fill their encoder calls: with no deadline for live sources, a call
    is short only when a stream ends, and every snippet is encoded exactly once."""
    models = BundleModels(tiny_bundle)
    calls: list[int] = []
    encode = models.encode
    models.encode = lambda x: calls.append(len(x)) or encode(x)
    no_deadline = Options(encoder_batch=16, max_delay=math.inf)
    stream_sources(models, long_videos, quiet=True, options=no_deadline)
    snippets, short_alone = sum(calls), sum(c < 16 for c in calls)
    calls.clear()
    options = replace(no_deadline, parallel=3)
    _, shared = stream_sources(models, long_videos, quiet=True, options=options)
    assert sum(calls) == snippets == shared["stages"]["encoder"]["snippets"]
    # alone, every video ends with a short call; shared, calls mix streams, so a call is short
    # only at a stream's end, when it also takes what the others have ready
    assert short_alone == len(long_videos)
    assert sum(c < 16 for c in calls) <= len(long_videos)
    assert max(calls) == 16 and len(calls) <= math.ceil(snippets / 16) + len(long_videos) - 1


def test_events_carry_their_video_and_the_stats_report_every_stage(tiny_bundle, long_videos):
    models = BundleModels(tiny_bundle)
    seen: list[tuple[str, float]] = []
    pipe = Pipeline(
        models,
        long_videos,
        on_event=lambda seg, now, latency: seen.append((seg.video, now)),
        options=Options(parallel=3),
    )
    pipe.run()
    assert {v for v, _ in seen} == {Path(p).stem for p in long_videos}
    stats = pipe.stats()
    lat = stats["latency_seconds"]
    assert lat["count"] == len(seen) and 0 <= lat["p50"] <= lat["p95"] <= lat["max"]
    for stage in ("decode", "encoder", "head", "postprocess"):
        assert stats["stages"][stage]["seconds"] > 0, stage
    assert stats["queue_depth"]["capacity"] == 64 and stats["realtime_factor"] > 0


def test_a_folder_and_a_list_expand_to_their_videos(tmp_path, long_videos):
    folder = Path(long_videos[0]).parent
    (folder / "notes.txt").write_text("not a video")
    assert expand_sources([str(folder)]) == sorted(long_videos)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# cameras\n{long_videos[1]}\n\nrtsp://cam.local/live\nrel.mp4\n")
    assert expand_sources([f"@{listing}", long_videos[0]]) == [
        long_videos[1],
        "rtsp://cam.local/live",
        str(tmp_path / "rel.mp4"),
        long_videos[0],
    ]
    with pytest.raises(LofiError, match="source list not found"):
        expand_sources([f"@{tmp_path / 'none.txt'}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LofiError, match="no video files"):
        expand_sources([str(tmp_path / "empty")])


def test_lofi_stream_parallel_on_a_folder_writes_what_one_at_a_time_writes(
    tmp_path, tiny_bundle, long_videos
):
    import json

    from tests.test_reliability_stream import run_stream

    folder = str(Path(long_videos[0]).parent)
    out = {}
    many = ("--parallel", "3", "--batch", "8", "--workers", "2")
    for args in ((), many):
        res, st = tmp_path / "r.json", tmp_path / "s.json"
        p = run_stream(
            folder,
            "--bundle",
            str(tiny_bundle),
            "--quiet",
            "--results",
            str(res),
            "--stats",
            str(st),
            *args,
        )
        assert p.returncode == 0, p.stderr
        stats = json.loads(st.read_text())
        out[args] = json.loads(res.read_text())["results"]
    assert stats["parallel"] == 3 and stats["encoder_batch"]["size"] == 8
    assert stats["encoder_workers"] == 2
    assert set(out[()]) == {Path(p).stem for p in long_videos}
    assert out[()] == out[many]
