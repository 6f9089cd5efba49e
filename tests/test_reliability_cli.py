"""Every command on broken inputs: no traceback, a non-zero exit and exactly one line on stderr.

Run in-process with click's runner (seconds for the whole table); a traceback shows up as an
exception other than SystemExit. docs/RELIABILITY.md lists these cases with what the user sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lofi.export.cli import main as export_cli
from lofi.runtime.cli import eval_cli, stream_cli
from lofi.trainer.cli import data_cli, train_cli

GT = {
    "database": {
        "v": {
            "subset": "validation",
            "duration": 50.0,
            "annotations": [{"segment": [1.0, 5.0], "label": "a"}],
        }
    }
}


def results(score: str = "0.9", segment: str = "[1, 5]", label: str = '"a"') -> str:
    return f'{{"results": {{"v": [{{"label": {label}, "score": {score}, "segment": {segment}}}]}}}}'


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("broken")
    (d / "gt.json").write_text(json.dumps(GT))
    (d / "good.json").write_text(results())
    (d / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (d / "list.json").write_text("[1, 2, 3]")
    (d / "nan_score.json").write_text(results(score="NaN"))
    (d / "inf_end.json").write_text(results(segment="[1, Infinity]"))
    (d / "str_score.json").write_text(results(score='"high"'))
    (d / "dict_label.json").write_text(results(label='{"x": 1}'))
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "latin1.yaml").write_bytes(b"lofi:\n  epochs: 3 # \xe9poques\n")
    (d / "list.yaml").write_text("- lofi\n- head\n")
    (d / "nan.yaml").write_text("lofi:\n  lr: .nan\n")
    (d / "unknown.yaml").write_text("lofi:\n  epoch: 3\n")
    (d / "notes.txt").write_text("not a video")
    (d / "empty.mp4").write_bytes(b"")
    (d / "bundle").mkdir()
    (d / "bundle" / "manifest.json").write_bytes(b"\xff\xfe")
    (d / "fakebundle").mkdir()
    (d / "fakebundle" / "manifest.json").write_text("[]")
    (d / "garbage.pt").write_bytes(b"garbage")
    (d / "videos").mkdir()
    return d


STAGE = ["head", "--run-dir", "{d}/run"]
CASES = {
    # lofi-eval
    "eval: annotations not UTF-8": (
        eval_cli,
        ["--ground-truth", "{d}/binary.json", "--predictions", "{d}/nan_score.json"],
        "not UTF-8",
    ),
    "eval: annotations not an object": (
        eval_cli,
        ["--ground-truth", "{d}/list.json", "--predictions", "{d}/gt.json"],
        "database",
    ),
    "eval: NaN score": (
        eval_cli,
        ["--ground-truth", "{d}/gt.json", "--predictions", "{d}/nan_score.json"],
        "nan_score.json: video 'v' prediction 0: 'score' must be a finite number",
    ),
    "eval: infinite segment end": (
        eval_cli,
        ["--ground-truth", "{d}/gt.json", "--predictions", "{d}/inf_end.json"],
        "'segment end' must be a finite number",
    ),
    "eval: score a string": (
        eval_cli,
        ["--ground-truth", "{d}/gt.json", "--predictions", "{d}/str_score.json"],
        "'score' must be a number, got 'high'",
    ),
    "eval: label an object": (
        eval_cli,
        ["--ground-truth", "{d}/gt.json", "--predictions", "{d}/dict_label.json"],
        "'label' must be a string",
    ),
    "eval: nested too deeply": (
        eval_cli,
        ["--ground-truth", "{d}/deep.json", "--predictions", "{d}/gt.json"],
        "nested too deeply",
    ),
    "eval: missing file": (
        eval_cli,
        ["--ground-truth", "{d}/none.json", "--predictions", "{d}/gt.json"],
        "not found",
    ),
    "eval: bad --tiou": (
        eval_cli,
        ["--ground-truth", "{d}/gt.json", "--predictions", "{d}/good.json", "--tiou", "0.5,x"],
        "--tiou",
    ),
    # lofi-stream
    "stream: manifest not UTF-8": (
        stream_cli,
        ["{d}/notes.txt", "--bundle", "{d}/bundle"],
        "is not UTF-8 text",
    ),
    "stream: manifest not an object": (
        stream_cli,
        ["{d}/notes.txt", "--bundle", "{d}/fakebundle"],
        "manifest",
    ),
    "stream: no bundle": (stream_cli, ["{d}/notes.txt", "--bundle", "{d}/videos"], "not a bundle"),
    # lofi-data
    "prepare: annotations not UTF-8": (
        data_cli,
        ["prepare", "{d}/binary.json", "{d}/videos", "{d}/cache"],
        "not UTF-8",
    ),
    "prepare: NaN in annotations": (
        data_cli,
        ["prepare", "{d}/nan_score.json", "{d}/videos", "{d}/cache"],
        "database",
    ),
    "prepare: bad --size": (
        data_cli,
        ["prepare", "{d}/gt.json", "{d}/videos", "{d}/cache", "--size", "64"],
        "--size",
    ),
    "prepare: zero --fps": (
        data_cli,
        ["prepare", "{d}/gt.json", "{d}/videos", "{d}/cache", "--fps", "0"],
        "--fps = '0': expected a number >= 0.01 and <= 1000",
    ),
    "prepare: every video missing": (
        data_cli,
        ["prepare", "{d}/gt.json", "{d}/videos", "{d}/cache"],
        "skipped video 'v'",
    ),
    "synth: bad --duration": (data_cli, ["synth", "{d}/syn", "--duration", "20-50"], "--duration"),
    # lofi-train (stage and plan)
    "train: config not UTF-8": (
        train_cli,
        [*STAGE, "--config", "{d}/latin1.yaml"],
        "not UTF-8 text",
    ),
    "train: config a list": (
        train_cli,
        [*STAGE, "--config", "{d}/list.yaml"],
        "top level must be a mapping",
    ),
    "train: NaN learning rate": (
        train_cli,
        [*STAGE, "--config", "{d}/nan.yaml"],
        "lofi.lr = nan: expected a number > 0",
    ),
    "train: unknown key in file": (
        train_cli,
        [*STAGE, "--config", "{d}/unknown.yaml"],
        "unknown config key 'lofi.epoch'",
    ),
    "train: missing config": (train_cli, [*STAGE, "--config", "{d}/none.yaml"], "config not found"),
    "train: override of the wrong type": (
        train_cli,
        [*STAGE, "--set", "head.epochs=abc"],
        "head.epochs = 'abc': expected an integer >= 0",
    ),
    "train: override out of range": (
        train_cli,
        [*STAGE, "--set", "head.ema=1.5"],
        "head.ema = 1.5: expected a number >= 0 and < 1",
    ),
    "train: override not in the enum": (
        train_cli,
        [*STAGE, "--set", "lofi.schedule=fast"],
        "expected one of full, S, T",
    ),
    "train: unknown override": (
        train_cli,
        [*STAGE, "--set", "lofi.nope=1"],
        "unknown config key 'lofi.nope'",
    ),
    "train: override without =": (train_cli, [*STAGE, "--set", "lofi.epochs"], "key.path=value"),
    "plan: override of the wrong type": (
        train_cli,
        ["plan", "--set", "lofi.batch_size=two"],
        "lofi.batch_size = 'two'",
    ),
    # lofi-export
    "export: checkpoint not a checkpoint": (
        export_cli,
        ["{d}/garbage.pt", "{d}/out"],
        "cannot read checkpoint",
    ),
    "export: missing checkpoint": (export_cli, ["{d}/none.pt", "{d}/out"], "none.pt"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_input_is_one_line_and_non_zero(files, name):
    command, args, expected = CASES[name]
    result = CliRunner().invoke(command, [a.format(d=files) for a in args])
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.exit_code != 0
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
