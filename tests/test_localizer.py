"""The Python API: the README's example runs as written; `stream` yields what `run` returns,
before the video ends; `run` equals offline inference; failures raise, damage warns."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from lofi.runtime import Event, Localizer, LofiError
from lofi.runtime.decode import read_video
from lofi.runtime.models import BundleModels
from lofi.runtime.streaming import localize_offline

from tests.test_runtime_pipeline import assert_same

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_readme_example_runs(tmp_path, tiny_bundle, tiny_synth, capsys):
    demo = tmp_path / "lofi-demo-out"
    (demo / "synth" / "videos").mkdir(parents=True)
    shutil.copytree(tiny_bundle, demo / "bundle")
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    shutil.copy(video, demo / "synth" / "videos")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(readme_example(), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    models = BundleModels(tiny_bundle)
    m = models.manifest
    offline, _ = localize_offline(models, read_video(video, 8.0, (m.height, m.width)), "v")
    assert len(out) > len(offline) > 10  # events past the per-video cap are printed too
    assert out[-1].startswith(f"{len(offline)} segments at")


def test_stream_yields_the_segments_run_returns_and_run_equals_offline(tiny_bundle, tiny_synth):
    video = tiny_synth / "videos" / "synth_val_0001.mp4"
    loc = Localizer(tiny_bundle)
    events = list(loc.stream(video))
    assert events and all(isinstance(e, Event) and e.video == video.stem for e in events)
    assert loc.stats["videos"] == 1 and loc.stats["latency_seconds"]["count"] == len(events)
    segments = loc.run(str(video))
    # run keeps the per-video top max_segments of what stream yielded
    key = lambda x: (-x.score, x.start, x.end, x.label)  # noqa: E731
    assert len(events) > len(segments)
    assert sorted(map(key, events))[: len(segments)] == sorted(map(key, segments))
    models = loc.models
    m = models.manifest
    frames = read_video(video, m.grid.fps, (m.height, m.width))
    assert_same(segments, localize_offline(models, frames, video.stem)[0])


def test_a_missing_source_raises_and_a_damaged_one_warns(tmp_path, tiny_bundle, tiny_synth):
    loc = Localizer(tiny_bundle)
    with pytest.raises(LofiError, match="not found"):
        loc.run(tmp_path / "none.mp4")
    with pytest.raises(LofiError, match="not found"):
        list(loc.stream(tmp_path / "none.mp4"))
    data = bytearray((tiny_synth / "videos" / "synth_val_0000.mp4").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt packet"):
        assert loc.run(tmp_path / "bad.mp4")


def test_leaving_a_stream_early_stops_its_decoder_and_encoder_workers(tiny_bundle, tiny_synth):
    import threading
    from dataclasses import replace

    loc = Localizer(tiny_bundle)
    loc.options = replace(loc.options, encoder_workers=2)  # as on a machine with cores to spare
    events = loc.stream(tiny_synth / "videos" / "synth_val_0000.mp4")
    next(events)
    events.close()
    left = [t.name for t in threading.enumerate() if t.is_alive()]
    assert not [n for n in left if n == "lofi-decode" or n.startswith("lofi-encoder")]
