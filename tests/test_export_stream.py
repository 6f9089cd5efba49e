"""Export parity, and streaming against offline inference of the same bundle."""

import json
import shutil

import numpy as np
import onnx
import pytest
from lofi.runtime.decode import read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.streaming import localize_offline, stream_frames


def test_bundle_contents_and_parity(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"encoder.onnx", "head.onnx", "parity.json"}
    for key in ("labels", "snippets", "input", "head", "postprocess", "format_version"):
        assert key in manifest
    parity = json.loads((tiny_bundle / "parity.json").read_text())
    assert parity["encoder_max_abs_err"] <= 1e-4 and parity["head_max_abs_err"] <= 1e-4
    for name in ("encoder.onnx", "head.onnx"):
        onnx.checker.check_model(str(tiny_bundle / name))


@pytest.mark.parametrize("n_frames", [5, 83, 250])
def test_streaming_equals_offline(tiny_bundle, n_frames):
    models = BundleModels(tiny_bundle)
    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, 256, (n_frames, 32, 32, 3), dtype=np.uint8)
    offline_segs, offline_out = localize_offline(models, frames, "v")
    loc = stream_frames(models, frames, "v", record=True)
    streamed_out = loc.recorded_outputs()
    for (c0, r0), (c1, r1) in zip(offline_out, streamed_out):
        assert c0.shape == c1.shape
        assert np.abs(c0 - c1).max() <= 1e-5 and np.abs(r0 - r1).max() <= 1e-5
    key = lambda segs: [
        (s.label, round(s.start, 4), round(s.end, 4), round(s.score, 5)) for s in segs
    ]
    assert key(loc.results()) == key(offline_segs)
    if n_frames == 250:
        assert loc.head_calls > 2  # really windowed
        assert len(loc.feats) < 100 and len(loc.frames) < 40  # bounded buffers


def test_kept_events_stay_bounded_and_results_equal_offline(tiny_bundle):
    # a long stream with a per-video cap of 3: the localizer keeps at most 2 x 3 events for the
    # results file, and its top 3 are still exactly offline's
    from dataclasses import replace

    models = BundleModels(tiny_bundle)
    models.manifest = replace(models.manifest, post=replace(models.manifest.post, max_segments=3))
    frames = np.random.default_rng(7).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    offline, _ = localize_offline(models, frames, "v")
    events = []
    loc = stream_frames(models, iter(frames), "v", on_event=lambda s, now: events.append(s))
    assert len(events) > 6 and len(loc.emitted) <= 6
    assert loc.results() == offline


def test_a_stop_request_ends_the_stream_as_if_the_video_ended_there(tiny_bundle, tiny_synth):
    # what Ctrl-C does to a live stream: the current video is finished at the frames it has,
    # its events flushed and kept for the results file; later sources do not start
    from lofi.runtime.pipeline import stream_sources

    models = BundleModels(tiny_bundle)
    m = models.manifest
    videos = [str(tiny_synth / "videos" / f"synth_val_000{i}.mp4") for i in (0, 1)]
    calls = []
    stop = lambda: calls.append(1) or len(calls) > 60  # checked per source start and per frame
    results, stats = stream_sources(models, videos, quiet=True, stop=stop)
    assert stats["stopped_early"] and stats["videos"] == 1 and 0 < stats["frames"] <= 60
    assert [s["status"] for s in stats["sources"]] == ["stopped"]
    frames = read_video(videos[0], m.grid.fps, (m.height, m.width))[: stats["frames"]]
    offline, _ = localize_offline(models, frames, "synth_val_0000")
    assert list(results) == ["synth_val_0000"] and results["synth_val_0000"] == offline
    assert offline  # the comparison is not between two empty lists


def test_min_score_filters_printed_events_only(tiny_bundle, tiny_synth):
    import io

    from lofi.runtime.pipeline import stream_sources

    models = BundleModels(tiny_bundle)
    video = [str(tiny_synth / "videos" / "synth_val_0000.mp4")]

    def run(min_score):
        out = io.StringIO()
        results, _ = stream_sources(models, video, out=out, min_score=min_score)
        return [json.loads(x) for x in out.getvalue().splitlines()], results

    every, res_all = run(0.0)
    cut = float(np.median([e["score"] for e in every]))
    high, res_high = run(cut)
    assert high == [e for e in every if e["score"] >= cut] and 0 < len(high) < len(every)
    assert res_high == res_all


def test_first_signal_requests_a_stop_second_aborts():
    import signal

    from lofi.runtime.signals import graceful_stop

    before = signal.getsignal(signal.SIGINT)
    with graceful_stop() as stop:
        assert not stop()
        signal.raise_signal(signal.SIGTERM)
        assert stop()
        # a second signal would end this process: tests/test_reliability_stream.py sends it
    assert signal.getsignal(signal.SIGINT) is before


def test_streaming_a_real_video_file(tiny_bundle, tiny_synth):
    models = BundleModels(tiny_bundle)
    m = models.manifest
    path = tiny_synth / "videos" / "synth_val_0000.mp4"
    frames = read_video(path, m.grid.fps, (m.height, m.width))
    offline, _ = localize_offline(models, frames, "v")
    streamed = stream_frames(models, iter(frames), "v").results()
    assert [(s.label, round(s.start, 4)) for s in streamed] == [
        (s.label, round(s.start, 4)) for s in offline
    ]


def test_modified_or_missing_bundle_file(tmp_path, tiny_bundle):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(LofiError, match="modified"):
        BundleModels(copy)
    (copy / "head.onnx").unlink()
    with pytest.raises(LofiError, match="missing"):
        BundleModels(copy)


def test_fp16_bundle(tmp_path, random_checkpoint):
    from lofi.export.bundle_writer import export_bundle

    folder, parity = export_bundle(random_checkpoint, tmp_path / "b16", fp16=True)
    assert parity["ok"] and parity["precision"] == "fp16"
    assert not (tmp_path / "b16.partial").exists()
    models = BundleModels(folder)
    assert models.manifest.precision == "fp16"
    frames = np.random.default_rng(0).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    offline, _ = localize_offline(models, frames, "v")
    assert [s.label for s in stream_frames(models, frames, "v").results()] == [
        s.label for s in offline
    ]


def test_tensorrt_paths_fail_clearly_without_engines_or_tensorrt(
    tmp_path, tiny_bundle, random_checkpoint
):
    with pytest.raises(LofiError, match="no TensorRT engine"):
        BundleModels(tiny_bundle, device="trt")
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from lofi.export.bundle_writer import export_bundle

        with pytest.raises(LofiError, match="TensorRT"):
            export_bundle(random_checkpoint, tmp_path / "trt", trt=True)
        assert not (tmp_path / "trt").exists() and not (tmp_path / "trt.partial").exists()
