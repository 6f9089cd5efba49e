"""Sources whose ids collide are refused before any work, never merged or dropped: events,
results (the ActivityNet results file) and stats are keyed by a source's id, its file stem or
its URL's last path part, and an id made up to tell two apart would match no ground truth."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lofi.runtime.errors import LofiError
from lofi.runtime.pipeline import Pipeline, distinct_ids


@pytest.mark.parametrize(
    "sources, first, second, vid",
    [
        (["a/x.mp4", "b/x.mp4"], "a/x.mp4", "b/x.mp4", "x"),  # one name in two folders
        (["a/x.mp4", "c/y.mp4", "a/x.mkv"], "a/x.mp4", "a/x.mkv", "x"),  # one stem, two kinds
        (["x.mp4", "x.mp4"], "x.mp4", "x.mp4", "x"),  # one source given twice
        (["rtsp://10.0.0.1/live", "rtsp://10.0.0.2/live/"], "rtsp://10.0.0.1/live", None, "live"),
    ],
)
def test_sources_with_one_id_are_refused_in_one_line(sources, first, second, vid):
    with pytest.raises(LofiError) as err:
        distinct_ids(sources)
    line = str(err.value)
    assert "\n" not in line and f"have the same video id '{vid}'" in line
    assert line.startswith(f"sources '{first}' and '{second or sources[1]}'")


def test_distinct_ids_pass_whatever_their_folders():
    distinct_ids(["a/x.mp4", "a/y.mp4", "b/xy.mp4", "rtsp://cam/x2", "camera:0", "camera:1"])
    distinct_ids([])


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    prebuilt = os.environ.get("LOFI_TEST_BUNDLE")
    return Path(prebuilt) if prebuilt else request.getfixturevalue("tiny_bundle")


def test_the_pipeline_refuses_them_before_any_work(bundle, tmp_path):
    from lofi.runtime.models import BundleModels

    models = BundleModels(bundle)
    models.encode = lambda x: pytest.fail("encoded a snippet of a refused run")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sources = [str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mp4")]
    errors: list[str] = []
    with pytest.raises(LofiError, match="have the same video id 'x'"):
        Pipeline(models, sources, error=errors.append)
    assert errors == []  # refused as a whole, not as two failed sources


def test_lofi_stream_refuses_them_in_one_line_and_writes_nothing(tmp_path):
    from click.testing import CliRunner
    from lofi.runtime.cli import stream_cli

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.mp4").write_bytes(b"")
    res = tmp_path / "r.json"
    args = [str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mp4")]
    out = CliRunner().invoke(
        stream_cli, [*args, "--bundle", str(tmp_path / "none"), "--results", str(res)]
    )
    lines = out.output.strip().splitlines()
    assert out.exit_code != 0 and len(lines) == 1, out.output
    assert lines[0].startswith("error: sources") and "same video id 'x'" in lines[0]
    assert not res.exists()
