"""Through every command that writes a user-named file: an output naming an input (or another
output) is refused before any work, leaving the input as it was; one output that cannot be
written costs none of the others; a video id given twice is refused, never merged."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lofi.runtime import outputs
from lofi.runtime.cli import eval_cli, stream_cli

GT = {
    "database": {
        "v1": {
            "subset": "validation",
            "duration": 10.0,
            "annotations": [{"segment": [1.0, 3.0], "label": "a"}],
        }
    }
}
PRED = {"results": {"v1": [{"segment": [1.0, 3.0], "label": "a", "score": 0.9}]}}


def invoke(cmd, args, name):
    return CliRunner().invoke(cmd, [str(a) for a in args], prog_name=name)


def one_error(result, status: int = 1) -> str:
    assert result.exit_code == status, (result.exit_code, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return gt, pred


def evaluate(gt: Path, pred: Path, *more):
    return invoke(eval_cli, ["--ground-truth", gt, "--predictions", pred, *more], "lofi-eval")


def test_eval_refuses_outputs_that_name_its_inputs(tmp_path, files):
    gt, pred = files
    before = gt.read_bytes(), pred.read_bytes()
    os.link(gt, tmp_path / "gt-link.json")
    cases = [
        (["--json", pred], "--json '.*pred.json' is the predictions"),
        (["--plot", gt], "--plot '.*gt.json' is the ground truth"),
        (["--json", tmp_path / "gt-link.json"], "is the ground truth"),
        (["--json", tmp_path / "r.json", "--plot", tmp_path / "r.json"], "also given as --json"),
        (["--json", gt / "r.json"], "is a file, not a folder"),
    ]
    for args, match in cases:
        line = one_error(evaluate(gt, pred, *args))
        assert re.search(match, line), line
    assert (gt.read_bytes(), pred.read_bytes()) == before


def test_eval_report_is_written_when_the_plot_cannot_be(tmp_path, files, monkeypatch):
    import lofi.runtime.plots as plots

    def full_disk(gt, preds, out):
        Path(out).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots, "plot_timelines", full_disk)
    gt, pred = files
    res = evaluate(gt, pred, "--json", tmp_path / "m.json", "--plot", tmp_path / "p.png")
    line = one_error(res)
    assert line == f"error: cannot write plot '{tmp_path / 'p.png'}': No space left on device"
    assert "mAP" in res.stdout
    assert json.loads((tmp_path / "m.json").read_text())["average_mAP"] == pytest.approx(1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json", "m.json", "pred.json"]


@pytest.mark.parametrize("which", ["ground truth", "predictions"])
def test_a_video_id_given_twice_is_refused(tmp_path, files, which):
    gt, pred = files
    if which == "predictions":
        entry = '[{"segment": [1.0, 3.0], "label": "a", "score": 0.9}]'
        pred.write_text(f'{{"results": {{"v1": {entry}, "v1": {entry}}}}}')
    else:
        entry = json.dumps(GT["database"]["v1"])
        gt.write_text(f'{{"database": {{"v1": {entry}, "v1": {entry}}}}}')
    line = one_error(evaluate(gt, pred, "--json", tmp_path / "m.json"))
    assert "'v1' is given twice" in line and str(gt if which != "predictions" else pred) in line
    assert not (tmp_path / "m.json").exists()


def stream(bundle: Path, *args):
    return invoke(stream_cli, [*args, "--bundle", bundle, "--quiet"], "lofi-stream")


def test_stream_refuses_outputs_that_name_inputs(tmp_path, tiny_bundle, tiny_synth):
    video = tmp_path / "v.mp4"
    shutil.copy(tiny_synth / "videos" / "synth_val_0000.mp4", video)
    listing = tmp_path / "list.txt"
    listing.write_text("v.mp4\n")
    before = video.read_bytes()
    cases = [
        ([video, "--results", video], "--results '.*v.mp4' is the source"),
        ([f"@{listing}", "--stats", listing], "--stats '.*list.txt' is the source list"),
        ([f"@{listing}", "--stats", video], "--stats '.*v.mp4' is the source"),
        ([video, "--stats", tiny_bundle / "s.json"], "inside the bundle folder"),
        ([video, "--results", tmp_path / "r", "--stats", tmp_path / "r"], "also given as"),
    ]
    for args, match in cases:
        line = one_error(stream(tiny_bundle, *args))
        assert re.search(match, line), line
    assert video.read_bytes() == before
    assert not (tiny_bundle / "s.json").exists()


def test_stream_sources_with_one_id_are_refused(tmp_path, tiny_bundle, tiny_synth):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(tiny_synth / "videos" / "synth_val_0000.mp4", tmp_path / folder / "x.mp4")
    res = stream(
        tiny_bundle, tmp_path / "a" / "x.mp4", tmp_path / "b", "--results", tmp_path / "r.json"
    )
    assert "same video id 'x'" in one_error(res)
    assert not (tmp_path / "r.json").exists()


def test_stream_results_are_written_when_stats_cannot_be(
    tmp_path, tiny_bundle, tiny_synth, monkeypatch
):
    real = outputs.write_output

    def stats_on_full_disk(path, what, write):
        if what == "stats":
            raise outputs.LofiError(f"cannot write stats '{path}': No space left on device")
        real(path, what, write)

    monkeypatch.setattr(outputs, "write_output", stats_on_full_disk)
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    res = stream(
        tiny_bundle, video, "--results", tmp_path / "r.json", "--stats", tmp_path / "s.json"
    )
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 1, res.stderr
    assert errors == [f"error: cannot write stats '{tmp_path / 's.json'}': No space left on device"]
    assert "synth_val_0000" in json.loads((tmp_path / "r.json").read_text())["results"]


def test_train_plan_and_convert_thumos_refuse_to_overwrite_inputs(tmp_path):
    from lofi.trainer.cli import data_cli, train_cli

    config = tmp_path / "c.yaml"
    config.write_text("lofi:\n  epochs: 1\n")
    line = one_error(
        invoke(train_cli, ["plan", "--config", config, "--json", config], "lofi-train")
    )
    assert "--json '" in line and "is the config" in line
    assert config.read_text() == "lofi:\n  epochs: 1\n"

    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "Run_val.txt").write_text("video_validation_1 1.0 2.0\n")
    (tmp_path / "vids").mkdir()
    args = ["convert-thumos", ann, ann / "Run_val.txt", "--videos", tmp_path / "vids"]
    line = one_error(invoke(data_cli, args, "lofi-data"))
    assert "OUT '" in line and "is the annotation file" in line
    assert (ann / "Run_val.txt").read_text() == "video_validation_1 1.0 2.0\n"


def test_prepare_refuses_a_repeated_id_and_an_index_over_its_annotations(tmp_path):
    from lofi.trainer.cli import data_cli

    entry = json.dumps({"subset": "training", "duration": 10.0, "annotations": []})
    ann = tmp_path / "gt.json"
    ann.write_text(f'{{"database": {{"a": {entry}, "b": {entry}, "a": {entry}}}}}')
    (tmp_path / "videos").mkdir()
    args = ["prepare", ann, tmp_path / "videos", tmp_path / "cache", "--workers", "1"]
    assert "'a' is given twice" in one_error(invoke(data_cli, args, "lofi-data"))
    assert not (tmp_path / "cache" / "index.json").exists()

    index = tmp_path / "cache2" / "index.json"
    index.parent.mkdir()
    index.write_text(json.dumps({"database": {"a": json.loads(entry)}}))
    args = ["prepare", index, tmp_path / "videos", index.parent, "--workers", "1"]
    line = one_error(invoke(data_cli, args, "lofi-data"))
    assert "is the annotation file" in line
    assert json.loads(index.read_text()) == {"database": {"a": json.loads(entry)}}


def test_export_refuses_an_out_folder_holding_its_checkpoint(tmp_path):
    from lofi.export.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"weights")
    for out in (run, tmp_path):
        line = one_error(invoke(main, [run / "checkpoint.pt", out], "lofi-export"))
        assert "holds the checkpoint" in line, line
    line = one_error(invoke(main, [run / "checkpoint.pt", tmp_path / "b"], "lofi-export"))
    assert "not a LoFi-TAL checkpoint" in line or "cannot read checkpoint" in line, line
    assert (run / "checkpoint.pt").read_bytes() == b"weights"
