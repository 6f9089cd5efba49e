"""A run folder never overwrites the run's own inputs (the outputs family, for lofi-train)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from lofi.runtime.errors import LofiError
from lofi.trainer.cli import train_cli
from lofi.trainer.config import load_config
from lofi.trainer.run import RUN_FILES, check_run_folder


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("lofi.init", "best.pt"),
        ("head.init", "checkpoint.pt"),
        ("model.weights", "best.pt"),
        ("data.annotations", "metrics.json"),
    ],
)
def test_an_input_that_the_run_would_overwrite_is_refused(tmp_path, key, name):
    run = tmp_path / "run"
    cfg = load_config(None, [f"{key}={run / name}"])
    with pytest.raises(LofiError, match=f"is the {key.replace('.', '[.]')} .*would be overwritten"):
        check_run_folder(run, cfg, None)


def test_inputs_elsewhere_and_other_files_in_the_folder_are_fine(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, [f"lofi.init={tmp_path / 'best.pt'}", f"head.init={run / 'old.pt'}"])
    check_run_folder(run, cfg, tmp_path / "run" / "my.yaml")
    assert set(RUN_FILES.values()) >= {"checkpoint.pt", "best.pt", "metrics.json"}


def test_the_config_file_named_as_a_run_file_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.json"
    config.write_text("{}")
    with pytest.raises(LofiError, match="is the config"):
        check_run_folder(run, load_config(None, []), config)


def test_lofi_train_refuses_before_any_work_and_leaves_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    best = run / "best.pt"
    best.write_bytes(b"the ACP checkpoint")
    result = CliRunner().invoke(
        train_cli, ["lofi", "--set", f"lofi.init={best}", "--run-dir", str(run)]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "best checkpoint" in lines[0] and "would be overwritten" in lines[0]
    assert best.read_bytes() == b"the ACP checkpoint"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]
