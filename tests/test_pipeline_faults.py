"""Fault isolation in the pipeline: one stream's failed encoder call fails that stream alone,
and every other stream runs on to exactly the events it gives streamed on its own.

The fault is tied to one video's pictures (its white stretch), not to a call count, so it
strikes only that stream's snippets, wherever the batching puts them; the test checks that
the calls it strikes are shared with other streams, which is where isolation can go wrong.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.pipeline import Options, Pipeline

WHITE = 250  # a snippet brighter than this on average is the bad video's; Synth-TAL is darker


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    """The tiny random-weight bundle. LOFI_TEST_BUNDLE names one already exported (mutation
    runs re-run these tests per mutant of the runtime, which cannot change the bundle)."""
    prebuilt = os.environ.get("LOFI_TEST_BUNDLE")
    return Path(prebuilt) if prebuilt else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    """Three Synth-TAL videos of 20-24 s at 8 fps (32x32); the second is all white."""
    from lofi.trainer.synth import UNTRIMMED_MOTIONS, SynthConfig, render_untrimmed, write_mp4

    folder = tmp_path_factory.mktemp("faults")
    cfg = SynthConfig(height=32, width=32, min_duration=20.0, max_duration=24.0, seed=11)
    paths = []
    for i in range(3):
        frames, _ = render_untrimmed(cfg, "validation", i, UNTRIMMED_MOTIONS[:4])
        if i == 1:  # white from its first snippet: its first calls are shared with the others
            frames = np.full_like(np.array(frames), 255)
        path = folder / f"cam_{i}.mp4"
        write_mp4(path, frames, cfg.fps)
        paths.append(str(path))
    return paths


def bright(x: np.ndarray) -> np.ndarray:
    """Which snippets of an encoder input (N, k, H, W, 3) are the bad video's white ones."""
    return x.reshape(len(x), -1).mean(1) > WHITE


def run(models: BundleModels, sources: list[str], **options) -> dict:
    """Events per video (label, start, end, score, emitted_at), results, records, error lines."""
    events: dict[str, list] = {}
    errors: list[str] = []

    def on_event(seg, now, latency) -> None:
        events.setdefault(seg.video, []).append((seg.label, seg.start, seg.end, seg.score, now))

    pipe = Pipeline(models, sources, on_event, Options(**options), error=errors.append).run()
    return {
        "events": events,
        "results": pipe.results,
        "records": pipe.records,
        "errors": errors,
        "stats": pipe.stats(),
    }


@pytest.fixture(scope="module")
def solo(bundle, videos) -> dict:
    """Each good video streamed on its own, and which snippets (by content) are whose."""
    models = BundleModels(bundle)
    encode, owner = models.encode, {}
    out = {}
    for path in (videos[0], videos[2]):
        vid = Path(path).stem

        def record(x, vid=vid):
            owner.update((s.tobytes(), vid) for s in x)
            return encode(x)

        models.encode = record
        out[vid] = run(models, [path], encoder_batch=8)
        assert out[vid]["errors"] == [] and len(out[vid]["events"][vid]) > 5
    return {"runs": out, "owner": owner}


@pytest.mark.parametrize("workers", [1, 3])
def test_one_streams_failed_encoder_call_leaves_the_others_exact(bundle, videos, solo, workers):
    models = BundleModels(bundle)
    encode, struck = models.encode, []

    def flaky(x):
        time.sleep(0.01)  # calls pile up on the workers: some fail after the bad stream did
        if bright(x).any():
            struck.append({solo["owner"].get(s.tobytes(), "bad") for s in x})
            raise LofiError("encoder: CUDA error: an illegal memory access")
        return encode(x)

    models.encode = flaky
    # which streams share a call depends on how far each decode thread got: run until the
    # fault has hit a call shared with a good stream (isolation then had something to do)
    for _ in range(5):
        struck.clear()
        got = run(models, videos, parallel=3, encoder_batch=8, encoder_workers=workers)
        check_isolated(got, solo["runs"])
        if any(len(owners) > 1 for owners in struck):
            break
    assert any(len(owners) > 1 for owners in struck), struck


def check_isolated(got: dict, solo_runs: dict) -> None:
    """The middle video failed in one line; the others' events and results are their solo
    runs'; the failed one's record says what it had emitted."""
    sources = [r["source"] for r in got["records"]]
    assert [r["status"] for r in got["records"]] == ["ok", "failed", "ok"]
    assert got["errors"] == [f"{sources[1]}: encoder: CUDA error: an illegal memory access"]
    assert set(got["results"]) == set(solo_runs)
    stats = got["stats"]  # encoder time, the retries' included, is a part of the wall time
    assert 0 < stats["stages"]["encoder"]["seconds"] <= stats["wall_seconds"]
    for vid, alone in solo_runs.items():
        assert got["events"][vid] == alone["events"][vid]
        assert got["results"][vid] == alone["results"][vid]
    bad = Path(sources[1]).stem
    assert got["records"][1] == {
        "source": sources[1],
        "video": bad,
        "status": "failed",
        "reason": got["errors"][0],
        "seconds": 0.0,
        "events": len(got["events"].get(bad, [])),
    }


def test_a_failed_call_of_one_stream_alone_fails_it_without_a_retry(bundle, videos):
    models = BundleModels(bundle)
    encode, calls = models.encode, []

    def flaky(x):
        calls.append(bright(x).any())
        if calls[-1]:
            raise LofiError("encoder lost")
        return encode(x)

    models.encode = flaky
    got = run(models, [videos[1]], encoder_batch=8)
    assert [r["status"] for r in got["records"]] == ["failed"]
    assert got["errors"] == [f"{videos[1]}: encoder lost"] and got["results"] == {}
    assert calls.count(True) == 1  # failed once, not made again on its own
    assert calls[-1]  # and nothing encoded after it


def test_every_call_failing_fails_every_stream_once(bundle, videos):
    models = BundleModels(bundle)

    def broken(x):
        raise LofiError("encoder lost")

    models.encode = broken
    got = run(models, videos, parallel=3, encoder_batch=8, encoder_workers=2)
    assert [r["status"] for r in got["records"]] == ["failed"] * 3
    assert sorted(got["errors"]) == sorted(f"{v}: encoder lost" for v in videos)
    assert got["results"] == {} and got["events"] == {}


def test_a_stream_whose_head_fails_on_its_features_fails_alone(bundle, videos, solo, monkeypatch):
    from lofi.runtime import pipeline

    models = BundleModels(bundle)
    real = pipeline.make_localizer

    def flaky(models, vid, *args, **kw):
        loc = real(models, vid, *args, **kw)
        if vid == Path(videos[1]).stem:
            add = loc.add_features

            def add_features(feats):
                if len(loc.feats) >= 16:
                    raise LofiError("head output has NaN")
                return add(feats)

            loc.add_features = add_features
        return loc

    monkeypatch.setattr(pipeline, "make_localizer", flaky)
    got = run(models, videos, parallel=3, encoder_batch=8, encoder_workers=2)
    assert [r["status"] for r in got["records"]] == ["ok", "failed", "ok"]
    assert got["errors"] == [f"{videos[1]}: head output has NaN"]
    for vid, alone in solo["runs"].items():
        assert got["events"][vid] == alone["events"][vid]


def test_a_stream_that_ends_with_calls_out_waits_for_their_features(bundle, videos, solo):
    # the video ends while its last calls are still on the workers: closing it then would
    # drop their features, and with them its last events
    models = BundleModels(bundle)
    encode = models.encode

    def slow(x):
        time.sleep(0.05)
        return encode(x)

    models.encode = slow
    vid = Path(videos[0]).stem
    got = run(models, [videos[0]], encoder_batch=8, encoder_workers=2)
    assert got["events"][vid] == solo["runs"][vid]["events"][vid]
    assert got["results"][vid] == solo["runs"][vid]["results"][vid]


def test_the_main_thread_sleeps_while_encoder_calls_are_out(bundle, videos):
    # a round that got nothing back waits for a frame or a finished call instead of spinning:
    # about one round per frame and call here, where spinning makes thousands
    models = BundleModels(bundle)
    encode = models.encode

    def slow(x):
        time.sleep(0.05)
        return encode(x)

    models.encode = slow
    pipe = Pipeline(models, videos[:1], options=Options(encoder_batch=8, encoder_workers=2))
    rounds = 1
    while pipe.step():
        rounds += 1
    assert pipe.records[0]["status"] == "ok" and rounds < 1500


def test_a_failed_shared_call_retries_each_running_owner_with_its_own_snippets(bundle):
    """After the first stream failed, a later failed call it shared is made again for the
    others that still run, each with exactly its own snippets, in order."""
    from types import SimpleNamespace

    from lofi.runtime.pipeline import _Call

    pipe = Pipeline(BundleModels(bundle), [], error=lambda line: None)
    pipe.models.encode = lambda x: x * 10.0
    got: dict[str, list] = {}

    def stream(name: str) -> SimpleNamespace:
        loc = SimpleNamespace(add_features=lambda f: got.setdefault(name, []).append(f.tolist()))
        feed = SimpleNamespace(close=lambda: None)
        return SimpleNamespace(loc=loc, feed=feed, record={"source": name}, events=0)

    a, b, c, d = (stream(n) for n in "abcd")
    pipe.active = [a, c, d]  # b failed already
    snippets = np.arange(7.0).reshape(7, 1)
    call = _Call(None, [(a, 2), (b, 2), (c, 1), (d, 2)], snippets)
    pipe._retry_alone(call, LofiError("lost"))
    assert got == {"a": [[[0.0], [10.0]]], "c": [[[40.0]]], "d": [[[50.0], [60.0]]]}
    assert pipe.active == [a, c, d]
    pipe._retry_alone(_Call(None, [(d, 7)], snippets), LofiError("lost"))  # alone: no retry
    assert pipe.active == [a, c] and d.record["status"] == "failed"
    assert len(got["d"]) == 1 and d.record["reason"] == "d: lost"
