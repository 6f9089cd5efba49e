"""The last line of defence: whatever a command did not foresee ends as ONE line naming the
command and what it was working on, exit status 3; the traceback only with --debug."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lofi.runtime.errors import INTERNAL_ERROR

BOOM = "boom\x1b[31m"  # an escape sequence must not reach the terminal raw


def fail(*args, **kwargs):
    raise RuntimeError(BOOM)


def invoke(cmd, args: list, name: str):
    return CliRunner().invoke(cmd, [str(a) for a in args], prog_name=name)


def check_backstop(cmd, args: list, name: str, subject: str | None) -> None:
    """`name`: the command as the user typed it (a group's, then the subcommand)."""
    prog = name.split()[0]
    res = invoke(cmd, args, prog)
    assert res.exit_code == INTERNAL_ERROR == 3, (res.exit_code, res.stderr, res.exception)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    # progress lines may come before (lofi-demo's steps); the failure is one line, the last
    assert [x for x in lines if x.startswith("error")] == lines[-1:], res.stderr
    line = lines[-1]
    assert line.startswith(f"error: {name}: internal error"), line
    assert "RuntimeError: 'boom\\x1b[31m'" in line and "\x1b" not in line, line
    assert "--debug" in line and "Traceback" not in res.stderr
    if subject:
        assert f" while working on {subject}" in line, line
    else:
        assert "while working on" not in line, line

    res = invoke(cmd, [*args, "--debug"], prog)
    assert res.exit_code == 3
    assert "Traceback (most recent call last):" in res.stderr, res.stderr
    assert "in fail" in res.stderr and f"RuntimeError: {BOOM}" in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {name}: internal error") and "run again" not in last


@pytest.fixture
def eval_files(tmp_path: Path) -> list:
    gt = {"database": {"v": {"subset": "validation", "duration": 9.0, "annotations": []}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "p.json").write_text(json.dumps({"results": {"v": []}}))
    return ["--ground-truth", tmp_path / "gt.json", "--predictions", tmp_path / "p.json"]


def test_lofi_eval(monkeypatch, eval_files):
    import lofi.runtime.cli as cli

    monkeypatch.setattr(cli, "evaluate", fail)
    check_backstop(cli.eval_cli, eval_files, "lofi-eval", f"the predictions '{eval_files[3]}'")


def test_lofi_stream(monkeypatch, tmp_path):
    import lofi.runtime.cli as cli

    monkeypatch.setattr(cli, "planned_models", fail)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    bundle = tmp_path / "bundle"
    check_backstop(
        cli.stream_cli, [video, "--bundle", bundle], "lofi-stream", f"the bundle '{bundle}'"
    )


def test_lofi_data(monkeypatch, tmp_path):
    import lofi.trainer.cli as cli
    import lofi.trainer.thumos as thumos

    monkeypatch.setattr(cli, "prepare_cache", fail)
    monkeypatch.setattr(cli, "generate", fail)
    monkeypatch.setattr(thumos, "convert_thumos", fail)
    (tmp_path / "gt.json").write_text("{}")
    out = tmp_path / "cache"
    args = ["prepare", tmp_path / "gt.json", tmp_path, out]
    check_backstop(cli.data_cli, args, "lofi-data prepare", f"the frame cache '{out}'")
    args = ["synth", out]
    check_backstop(cli.data_cli, args, "lofi-data synth", f"the benchmark folder '{out}'")
    args = ["convert-thumos", tmp_path, tmp_path / "t.json", "--videos", tmp_path]
    check_backstop(cli.data_cli, args, "lofi-data convert-thumos", None)


def test_lofi_train(monkeypatch, tmp_path):
    import lofi.trainer.cli as cli
    import lofi.trainer.stages as stages

    monkeypatch.setitem(stages.RUNNERS, "lofi", fail)
    run = tmp_path / "run"
    args = ["lofi", "--run-dir", run]
    check_backstop(cli.train_cli, args, "lofi-train lofi", f"the run folder '{run}'")


def test_lofi_export(monkeypatch, tmp_path):
    import lofi.export.bundle_writer as writer
    from lofi.export.cli import main

    monkeypatch.setattr(writer, "export_bundle", fail)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    args = [ckpt, tmp_path / "out"]
    check_backstop(main, args, "lofi-export", f"the checkpoint '{ckpt}'")


def test_lofi_demo(monkeypatch, tmp_path):
    import lofi.trainer.synth as synth
    from lofi.export.demo import main

    monkeypatch.setattr(synth, "generate", fail)
    check_backstop(main, ["--out", tmp_path / "demo", "--small"], "lofi-demo", None)


def test_system_errors_and_interrupts_are_one_line_with_their_own_status(monkeypatch, eval_files):
    import lofi.runtime.cli as cli

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for raiser, status, line in [
        (
            no_space,
            1,
            f"error: lofi-eval: No space left on device (working on the predictions '{eval_files[3]}')",
        ),
        (interrupted, 130, "error: interrupted"),
    ]:
        monkeypatch.setattr(cli, "evaluate", raiser)
        res = invoke(cli.eval_cli, eval_files, "lofi-eval")
        assert (res.exit_code, res.stderr) == (status, line + "\n")
