"""The shared rules every reader and writer applies: data-built paths stay inside their folder
(runtime/paths.py) and the one JSON reader's limits (runtime/documents.py). Torch-free and fast,
so the mutation runs re-run them per mutant."""

from __future__ import annotations

import os

import pytest
from lofi.runtime.documents import MAX_DEPTH, MAX_INT_DIGITS, parse_json, read_json
from lofi.runtime.errors import LofiError, shown
from lofi.runtime.paths import MAX_NAME_BYTES, file_name, inside


@pytest.mark.parametrize(
    "name",
    ["v_abc", "a b", "vidéo", "x" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2), "...", ".a"],
)
def test_file_name_accepts_one_component(name):
    assert file_name(name, "video id") == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "/abs",
        "a\\b",
        "a\x00b",
        "a\x1fb",
        "a\x7fb",
        "\ud800x",
        "x" * (MAX_NAME_BYTES + 1),
        "é" * (MAX_NAME_BYTES // 2 + 1),
        None,
        7,
        ["a"],
    ],
)
def test_file_name_refuses_what_cannot_be_one_safe_component(name):
    with pytest.raises(LofiError) as err:
        file_name(name, "video id")
    line = str(err.value)
    assert line.startswith("video id ") and "\n" not in line and "\x00" not in line


def test_a_name_is_at_most_the_file_systems_255_bytes():
    file_name("x" * 255, "video id")
    with pytest.raises(LofiError):
        file_name("x" * 256, "video id")


def test_inside_keeps_relative_names_in_their_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    assert inside(tmp_path, "x.onnx", "file") == tmp_path / "x.onnx"
    assert inside(tmp_path, "sub/x", "file") == tmp_path / "sub" / "x"
    assert inside(tmp_path, ".", "file") == tmp_path / "."


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "sub/../../x", "a\\..\\x", "a\x00", "", 3])
def test_inside_refuses_names_that_leave(tmp_path, name):
    with pytest.raises(LofiError, match="^file "):
        inside(tmp_path, name, "file")


def test_inside_follows_symlinks_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    os.symlink(root / "sub", root / "self")  # dangling but inside
    with pytest.raises(LofiError, match="resolves outside"):
        inside(root, "link/data.bin", "external data")
    assert inside(root, "self/x", "file") == root / "self" / "x"


def test_duplicate_keys_are_refused_at_any_depth():
    assert parse_json('{"a": 1, "b": {"a": 2}}', "doc") == {"a": 1, "b": {"a": 2}}
    for text in ('{"a": 1, "a": 2}', '{"x": [{"v": 1, "v": 1}]}'):
        with pytest.raises(LofiError, match="^doc: key 'a' is given twice|^doc: key 'v'"):
            parse_json(text, "doc")


def test_depth_is_bounded_without_recursion_error():
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "doc") is not None
    assert parse_json('{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH, "doc") is not None
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(LofiError, match=f"^doc is nested too deeply \\(more than {MAX_DEPTH}"):
            parse_json("[" * depth + "]" * depth, "doc")
    with pytest.raises(LofiError, match="nested too deeply"):
        parse_json('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "doc")
    assert parse_json("[[1], 2]", "doc", max_depth=2) == [[1], 2]
    with pytest.raises(LofiError, match="nested too deeply"):  # a scalar walked before the depth
        parse_json("[[[1]], 2]", "doc", max_depth=2)


def test_integers_have_a_sane_length():
    assert parse_json("9" * MAX_INT_DIGITS, "doc") == int("9" * MAX_INT_DIGITS)
    assert parse_json("-" + "9" * MAX_INT_DIGITS, "doc") == -int("9" * MAX_INT_DIGITS)
    for text in ("9" * (MAX_INT_DIGITS + 1), "-" + "9" * (MAX_INT_DIGITS + 1), "1" * 5000):
        with pytest.raises(LofiError, match=f"^doc: an integer of {len(text.lstrip('-'))} digits"):
            parse_json(text, "doc")
    assert parse_json("1e300", "doc") == 1e300  # floats are the fields' business (bounds)


def test_read_json_refuses_in_one_line_naming_the_file(tmp_path):
    path = tmp_path / "gt.json"
    with pytest.raises(LofiError, match="^annotations not found: "):
        read_json(path, "annotations")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(LofiError, match=r"^annotations .*gt.json is not UTF-8 text \(byte 7\)"):
        read_json(path, "annotations")
    path.write_text('{"a": ')
    with pytest.raises(LofiError, match=r"^annotations .*gt.json is not valid JSON"):
        read_json(path, "annotations")
    path.write_text('{"a": 1}')
    assert read_json(path, "annotations", max_bytes=8) == {"a": 1}
    with pytest.raises(LofiError, match="is larger than 7 bytes"):
        read_json(path, "annotations", max_bytes=7)
    path.write_text('{"a": 1, "a": 1}')
    with pytest.raises(LofiError, match=r"gt.json: key 'a' is given twice"):
        read_json(path, "annotations")


def test_shown_is_short_escaped_and_never_raises():
    assert shown("a\x1b[2J\n") == "'a\\x1b[2J\\n'"
    assert shown("é") == "'\\xe9'"
    assert shown("x" * 10) == repr("x" * 10)
    cut = shown("x" * 10**7)
    assert cut == repr("x" * 60)[:60] + "..." and len(cut) == 63
    assert shown("x" * 58) == repr("x" * 58)  # exactly the limit: whole
    assert shown("x" * 59).endswith("...")
    assert shown(10**5000) == "<integer of about 5000 digits>"
    assert shown(2**127) == str(2**127) and shown(2**128).startswith("<integer of about")
    assert "too long" in shown([10**5000])
    assert len(shown({"k": ["v" * 10**6] * 10**5})) <= 63
    assert shown(True) == "True" and shown(None) == "None" and shown(1.5) == "1.5"


def test_the_documented_limits():
    """docs/RELIABILITY.md quotes these limits; changing one changes the table with it."""
    assert (MAX_DEPTH, MAX_INT_DIGITS, MAX_NAME_BYTES) == (64, 30, 255)
    from lofi.runtime.documents import MAX_DOCUMENT_BYTES

    assert MAX_DOCUMENT_BYTES == 512 * 2**20
