"""load_manifest's integrity checks on a synthetic bundle: small ONNX graphs built with the
onnx package (one with external data), a parity record and a manifest written by the runtime's
own writer. No export and no ONNX Runtime session, so these run in well under a second each and
are the tests bench/mutate.py runs against runtime/bundle.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from lofi.runtime import bundle
from lofi.runtime.bundle import (
    DIGEST_KEY,
    Manifest,
    check_manifest_values,
    graph_files,
    load_manifest,
    manifest_digest,
    manifest_digest_of,
    read_verified,
    sha256_file,
    write_manifest,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid
from onnx import TensorProto, helper, numpy_helper

DATA = "encoder.onnx.data"


def _graph(path: Path, external: str | None) -> None:
    weight = numpy_helper.from_array(np.arange(300, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [300])],
        [weight],
    )
    model = helper.make_model(graph)
    if external is None:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model, str(path), save_as_external_data=True, location=external, size_threshold=0
        )


def _manifest(files: list[str]) -> Manifest:
    return Manifest(
        labels=["a", "b"],
        grid=SnippetGrid(8.0, 4, 1, 4),
        height=32,
        width=32,
        mean=[0.45] * 3,
        std=[0.225] * 3,
        feature_dim=16,
        post=PostConfig(),
        precision="fp32",
        files={f: "" for f in files},
        engines=[],
        strides=[1, 2],
        window=16,
        context=8,
        max_reach=16.0,
    )


@pytest.fixture
def b(tmp_path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    _graph(folder / "encoder.onnx", DATA)
    _graph(folder / "head.onnx", None)
    (folder / "parity.json").write_text(json.dumps({"ok": True, "engines": {}}))
    write_manifest(folder, _manifest(["encoder.onnx", DATA, "head.onnx", "parity.json"]))
    return folder


def _edit(folder: Path, edit) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    data[DIGEST_KEY] = manifest_digest(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def _rehash(folder: Path, files: list[str]) -> None:
    m = Manifest.from_json(json.loads((folder / "manifest.json").read_text()))
    write_manifest(folder, dataclasses.replace(m, files={f: "" for f in files}))


def _refused(folder: Path, pattern: str) -> str:
    with pytest.raises(LofiError, match=pattern) as err:
        load_manifest(folder)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_good_bundle_loads_and_every_file_is_hashed(b):
    folder, m = load_manifest(b)
    assert folder == b and set(m.files) == {"encoder.onnx", DATA, "head.onnx", "parity.json"}
    for name, digest in m.files.items():
        assert digest == hashlib.sha256((b / name).read_bytes()).hexdigest()
    data = json.loads((b / "manifest.json").read_text())
    assert data[DIGEST_KEY] == manifest_digest(data) == manifest_digest_of(b)


@pytest.mark.parametrize("name", ["encoder.onnx", DATA, "head.onnx", "parity.json"])
def test_one_flipped_byte_in_each_file_is_refused_naming_it(b, name):
    raw = bytearray((b / name).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (b / name).write_bytes(bytes(raw))
    _refused(b, rf"^bundle file modified \(sha256 mismatch\): {re.escape(str(b / name))}$")


@pytest.mark.parametrize("name", ["encoder.onnx", DATA, "parity.json"])
def test_a_missing_file_is_refused_naming_it(b, name):
    (b / name).unlink()
    _refused(b, rf"^bundle file missing: {re.escape(str(b / name))}$")


def test_a_folder_or_fifo_is_refused_not_read(b):
    (b / DATA).unlink()
    (b / DATA).mkdir()
    _refused(b, rf"{DATA} is not a regular file")
    (b / DATA).rmdir()
    os.mkfifo(b / DATA)
    _refused(b, rf"{DATA} is not a regular file")


def test_the_graphs_bytes_and_their_external_data_are_returned_verified(b):
    _, m = load_manifest(b)
    data, external = graph_files(b, m, "encoder.onnx")
    assert data == (b / "encoder.onnx").read_bytes()
    assert external == {DATA: (b / DATA).read_bytes()}
    assert graph_files(b, m, "head.onnx") == ((b / "head.onnx").read_bytes(), {})
    (b / DATA).write_bytes(b"changed after the check")
    with pytest.raises(LofiError, match=rf"modified \(sha256 mismatch\): .*{DATA}$"):
        graph_files(b, m, "encoder.onnx")
    with pytest.raises(LofiError, match="field files does not list notes.txt"):
        read_verified(b, m, "notes.txt")


def test_external_data_beyond_its_file_is_refused(b):
    model = onnx.load(str(b / "encoder.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "offset":
            entry.value = "1190"  # 1200 bytes of weights from byte 1190 of a 1200-byte file
    (b / "encoder.onnx").write_bytes(model.SerializeToString())
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json"])
    _, m = load_manifest(b)
    with pytest.raises(LofiError, match=r"tensor 'w' ends at byte 2390, beyond the 1200 bytes"):
        graph_files(b, m, "encoder.onnx")


def test_graphs_over_the_size_limit_are_refused(b, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_GRAPH_BYTES", 64)
    _refused(b, r"encoder.onnx is larger than 64 bytes")


@pytest.mark.parametrize(
    "location, reason",
    [
        ("../" + DATA, "points outside"),
        ("/" + DATA, "points outside"),
        ("other.data", r"in 'other.data', a file the manifest does not list \(unhashed\)"),
    ],
)
def test_external_data_must_be_listed_and_inside(b, location, reason):
    model = onnx.load(str(b / "encoder.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    (b / "encoder.onnx").write_bytes(model.SerializeToString())
    (b / "other.data").write_bytes((b / DATA).read_bytes())
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json"])
    text = _refused(b, reason)
    assert text.startswith(f"{b / 'encoder.onnx'}: external data of tensor 'w'")


@pytest.mark.parametrize("name", ["../x", "/abs", "sub/x", "..", ".", "a\x00b", "a\nb"])
def test_listed_names_are_one_file_inside_the_bundle(b, name):
    _edit(b, lambda d: d["files"].update({name: "0" * 64}))
    _refused(b, r"manifest.json: field files entry")


def test_a_listed_symlink_out_of_the_bundle_is_refused(b, tmp_path):
    (b / DATA).rename(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", b / DATA)
    _refused(b, rf"'{DATA}' resolves outside")


def test_a_file_no_graph_or_engine_uses_is_refused(b):
    (b / "notes.txt").write_text("x")
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json", "notes.txt"])
    _refused(b, r"field files lists notes.txt, which no graph or engine uses$")


@pytest.mark.parametrize("name", ["encoder.onnx", "head.onnx", "parity.json"])
def test_every_needed_file_must_be_listed(b, name):
    _edit(b, lambda d: d["files"].pop(name))
    _refused(b, rf"field files does not list {name}$")


def test_an_engine_must_be_listed(b):
    engine = {"part": "encoder", "file": "encoder.plan"}
    _edit(b, lambda d: d.update(engines=[engine]))
    _refused(b, r"field files does not list encoder.plan$")


def test_an_edited_manifest_is_refused(b):
    data = json.loads((b / "manifest.json").read_text())
    data["precision"] = "fp16"
    (b / "manifest.json").write_text(json.dumps(data))
    _refused(b, r"field manifest_sha256 does not match the manifest \(edited\?\)$")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[1, 2]", "is not a LoFi-TAL bundle manifest"),
        ('{"a": 1, "a": 2}', "'a' is given twice"),
        ("{", "is not valid JSON"),
        ("[" * 100 + "]" * 100, "nested too deeply"),
    ],
)
def test_manifest_documents_are_read_with_limits(b, text, reason):
    (b / "manifest.json").write_text(text)
    _refused(b, reason)


def test_no_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(LofiError, match=r"^not a bundle \(no manifest.json\): "):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "parity, reason",
    [
        ({"ok": False}, "field 'ok' is not true: the bundle failed its parity check"),
        ({"ok": 1}, "field 'ok' is not true"),
        ([True], "field 'ok' is not true"),
        ({"ok": True, "engines": []}, "field engines must be an object"),
        ({"ok": True, "engines": {"e.plan": {"ok": False}}}, r"engines.e.plan.ok is not true"),
        ({"ok": True, "engines": {"e.plan": True}}, r"engines.e.plan.ok is not true"),
    ],
)
def test_the_parity_record_must_say_ok(b, parity, reason):
    (b / "parity.json").write_text(json.dumps(parity))
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json"])
    _refused(b, reason)


@pytest.mark.parametrize(
    "raw, reason",
    [(b"\xff\xfe", "is not UTF-8 text"), (b'{"ok": true, "ok": true}', "given twice")],
)
def test_a_parity_record_that_is_not_json_is_one_line(b, raw, reason):
    (b / "parity.json").write_bytes(raw)
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json"])
    _refused(b, reason)


def test_the_parity_record_loaded_is_the_verified_one(b):
    _, m = load_manifest(b)
    assert bundle.read_parity(b, m) == {"ok": True, "engines": {}}


def _values(**changes) -> dict:
    data = _manifest(["encoder.onnx", "head.onnx", "parity.json"]).to_json()
    data["files"] = {k: "a" * 64 for k in data["files"]}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"labels": ["a", "a"]}, r"labels\[1\] 'a' is given twice"),
        ({"labels": ["a", ""]}, r"labels\[1\] must be a non-empty string, got ''"),
        ({"labels": [" ", "a"]}, r"labels\[0\] must be a non-empty string"),
        ({"labels": ["a", None]}, r"labels\[1\] must be a non-empty string, got None"),
        ({"labels": []}, "labels must be a non-empty list of names"),
        ({"labels": "ab"}, "field labels must be a list"),
        ({"files": {"head.onnx": "A" * 64}}, r"files.'head.onnx' must be a sha256 in hex"),
        ({"files": {"head.onnx": "a" * 63}}, r"must be a sha256 in hex, got 'a"),
        ({"files": {"head.onnx": 5}}, r"must be a sha256 in hex, got 5"),
        ({"engines": [5]}, r"engines\[0\] must be an object with a file"),
        ({"engines": {}}, "field engines must be a list"),
        ({"files": []}, "field files must be an object"),
        ({"head": 3}, "field head must be an object"),
        ({"engines": [{"file": 5}]}, r"engines\[0\] must be an object with a file"),
    ],
)
def test_manifest_values_are_refused_in_one_line(changes, reason):
    with pytest.raises(LofiError, match=reason):
        check_manifest_values(_values(**changes))


def test_good_labels_files_and_engines_pass():
    check_manifest_values(_values(labels=["a", "b", "A"], engines=[{"file": "e.plan"}]))
    with pytest.raises(LofiError, match="not a LoFi-TAL bundle manifest"):
        check_manifest_values([])


def test_sha256_file_reads_every_chunk(tmp_path):
    path = tmp_path / "big"
    raw = os.urandom((1 << 20) * 2 + 5)
    path.write_bytes(raw)
    assert sha256_file(path) == hashlib.sha256(raw).hexdigest()


def test_the_digest_covers_every_field_but_itself():
    data = _values()
    digest = manifest_digest(data)
    assert manifest_digest({**data, DIGEST_KEY: "x"}) == digest
    assert manifest_digest({**data, "precision": "fp16"}) != digest
    assert manifest_digest({**data, "extra": 1}) != digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_manifest_digest_of_a_folder_without_a_digest(tmp_path):
    (tmp_path / "manifest.json").write_text("[]")
    assert manifest_digest_of(tmp_path) == ""
    (tmp_path / "manifest.json").write_text('{"a": 1}')
    assert manifest_digest_of(tmp_path) == ""


@pytest.mark.parametrize("offset, refused", [(1200, False), (1201, True)])
def test_external_data_without_a_length_runs_to_the_end_of_its_file(b, offset, refused):
    model = onnx.load(str(b / "encoder.onnx"), load_external_data=False)
    entries = model.graph.initializer[0].external_data
    kept = [(e.key, e.value) for e in entries if e.key != "length"]
    del entries[:]
    for key, value in kept:
        entries.add(key=key, value=str(offset) if key == "offset" else value)
    (b / "encoder.onnx").write_bytes(model.SerializeToString())
    _rehash(b, ["encoder.onnx", DATA, "head.onnx", "parity.json"])
    _, m = load_manifest(b)
    if refused:
        with pytest.raises(LofiError, match="ends at byte 1201, beyond the 1200 bytes"):
            graph_files(b, m, "encoder.onnx")
    else:
        assert graph_files(b, m, "encoder.onnx")[1] == {DATA: (b / DATA).read_bytes()}


def test_a_graph_of_exactly_the_size_limit_loads(b, monkeypatch):
    size = max((b / n).stat().st_size for n in ("encoder.onnx", "head.onnx"))
    monkeypatch.setattr(bundle, "MAX_GRAPH_BYTES", size)
    load_manifest(b)
    monkeypatch.setattr(bundle, "MAX_GRAPH_BYTES", size - 1)
    _refused(b, rf"is larger than {size - 1} bytes")


def test_the_digest_does_not_depend_on_key_order_or_choke_on_nan(b):
    data = _values()
    assert manifest_digest(dict(reversed(list(data.items())))) == manifest_digest(data)
    # a field the runtime does not read may hold anything JSON allows, NaN included (Python's
    # json writes and reads it): the digest covers it instead of raising
    _edit(b, lambda d: d.update(note=float("nan")))
    load_manifest(b)
