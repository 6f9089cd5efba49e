"""runtime/outputs.py: an output never names an input or another output, and is written whole
or not at all, each on its own."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from lofi.runtime import outputs
from lofi.runtime.errors import LofiError
from lofi.runtime.outputs import (
    check_output_folder,
    check_outputs,
    json_writer,
    write_each,
    write_json,
    write_output,
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "in.json").write_text("{}")
    return tmp_path / "in.json"


def test_an_output_naming_an_input_is_refused_however_spelled(tmp_path, data):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    os.link(data, tmp_path / "hard.json")
    spellings = [data, tmp_path / "sub" / ".." / "in.json", tmp_path / "link" / "in.json"]
    for spelling in [*spellings, tmp_path / "hard.json"]:
        with pytest.raises(LofiError, match=r"^--json .* is the predictions .*overwritten"):
            check_outputs({"--json": spelling}, [("ground truth", "x"), ("predictions", data)])
    assert data.read_text() == "{}"


def test_an_output_naming_another_output_is_refused(tmp_path):
    with pytest.raises(LofiError, match="--stats .* is also given as --results"):
        check_outputs({"--results": tmp_path / "r.json", "--stats": tmp_path / "." / "r.json"})
    got = check_outputs({"--results": tmp_path / "r.json", "--stats": None, "--plot": ""})
    assert got == {"--results": tmp_path / "r.json"}


def test_an_output_inside_an_input_folder_is_refused(tmp_path):
    (tmp_path / "bundle").mkdir()
    with pytest.raises(LofiError, match="inside the bundle folder"):
        check_outputs(
            {"--stats": tmp_path / "bundle" / "s.json"},
            [],
            [("bundle folder", tmp_path / "bundle")],
        )
    check_outputs(
        {"--stats": tmp_path / "bundle2.json"}, [], [("bundle folder", tmp_path / "bundle")]
    )


def test_places_that_cannot_hold_the_output_are_refused_before_work(tmp_path, data):
    (tmp_path / "dir").mkdir()
    (tmp_path / "ln.json").symlink_to(tmp_path / "elsewhere.json")  # dangling, still refused
    cases = {
        tmp_path / "ln.json": "symbolic link",
        tmp_path / "dir": "is a folder",
        data / "x.json": "is a file, not a folder",
        data / "deeper" / "x.json": "is a file, not a folder",
    }
    for path, match in cases.items():
        with pytest.raises(LofiError, match=match):
            check_outputs({"--json": path})
    # a folder not made yet is fine: it is created when the output is written
    check_outputs({"--json": tmp_path / "new" / "deeper" / "x.json"})


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: the real check is left to the test below
        ro.chmod(0o555)
        with pytest.raises(LofiError, match="is not writable"):
            check_outputs({"--json": ro / "x.json"})
        ro.chmod(0o755)
    asked = []
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: asked.append((Path(p), mode)))
    with pytest.raises(LofiError, match=r"--json '.*x.json': the folder '.*ro' is not writable"):
        check_outputs({"--json": ro / "new" / "x.json"})
    assert asked == [(ro, os.W_OK | os.X_OK)]  # files made in it, and it entered


def test_output_folder_holding_an_input_is_refused(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(LofiError, match="OUT .* holds the checkpoint .* would delete"):
        check_output_folder("OUT", [tmp_path / "run"], [("checkpoint", ckpt)])
    with pytest.raises(LofiError, match="holds the checkpoint"):
        check_output_folder("OUT", [tmp_path / "b", tmp_path / "run"], [("checkpoint", ckpt)])
    check_output_folder("OUT", [tmp_path / "bundle"], [("checkpoint", ckpt), ("cache", None)])


def test_written_whole_with_the_usual_permissions(tmp_path):
    path = tmp_path / "new" / "deeper" / "r.json"
    write_json(path, "results", {"a": [1, 2]})
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ]\n}'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_a_full_disk_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")

    def fill(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(LofiError) as exc:
        write_output(path, "results", fill)
    assert str(exc.value) == f"cannot write results '{path}': No space left on device"
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failures_at_write_time_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "ln.json").symlink_to(tmp_path / "target.json")
    with pytest.raises(LofiError, match="cannot write stats '.*ln.json': it is a symbolic link"):
        write_json(tmp_path / "ln.json", "stats", {})
    assert not (tmp_path / "target.json").exists()
    with pytest.raises(LofiError, match="cannot write stats '.*file/s.json': "):
        write_json(tmp_path / "file" / "s.json", "stats", {})


def test_each_output_is_written_on_its_own(tmp_path, capsys):
    def broken(tmp: Path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    failed = write_each(
        [
            ("stats", tmp_path / "s.json", broken),
            ("plot", None, broken),
            ("results", tmp_path / "r.json", json_writer({"ok": True})),
        ]
    )
    assert failed == 1
    assert (tmp_path / "r.json").read_text() == '{\n "ok": true\n}'
    assert not (tmp_path / "s.json").exists()
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: cannot write stats '{tmp_path / 's.json'}': Read-only file system"]


def test_paths_are_quoted_whole_unless_absurdly_long():
    from lofi.runtime.outputs import PATH_CHARS, named

    whole = "p" * (PATH_CHARS - 2)  # its repr, quotes included, is exactly PATH_CHARS long
    assert named(whole) == repr(whole)
    assert named(whole + "p") == repr(whole + "p")[:PATH_CHARS] + "..."
    assert named("a\x1bb") == "'a\\x1bb'"
