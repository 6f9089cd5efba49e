"""Every byte a bundle loads is verified: each listed file's hash one file at a time (ONNX
external data included), file names and external-data locations inside the bundle, nothing
unlisted or unused, what ONNX Runtime gets is what was hashed, and the manifest agrees with its
graphs at load. Bundles are edited copies of the session's tiny bundle, re-hashed where the
edit must get past the digests (no export per case)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from lofi.runtime.bundle import (
    DIGEST_KEY,
    Manifest,
    graph_files,
    load_manifest,
    manifest_digest,
    write_manifest,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.onnx_file import external_data

EXTERNAL = "encoder.onnx.data"


def rehash(folder: Path, **changes) -> None:
    """Rewrite the manifest with `changes` to its Manifest fields, every file re-hashed and the
    digest recomputed: a consistent bundle whose only fault is the one under test."""
    _, m = load_manifest_unchecked(folder)
    write_manifest(folder, dataclasses.replace(m, **changes))


def load_manifest_unchecked(folder: Path) -> tuple[Path, Manifest]:
    return folder, Manifest.from_json(json.loads((folder / "manifest.json").read_text()))


def edit_manifest(folder: Path, edit) -> None:
    """Edit the manifest's JSON and recompute its digest (files keep their hashes)."""
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    data[DIGEST_KEY] = manifest_digest(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def externalise(folder: Path, location: str = EXTERNAL) -> None:
    """Store encoder.onnx's weights beside it, as `onnx.save(..., save_as_external_data=True)`
    does for models over 2 GB, all of them pointing at `location`."""
    model = onnx.load(str(folder / "encoder.onnx"))
    onnx.save_model(
        model,
        str(folder / "encoder.onnx"),
        save_as_external_data=True,
        location=EXTERNAL,
        size_threshold=1024,  # onnx.save's default: small shape constants stay inline
    )
    if location != EXTERNAL:
        model = onnx.load(str(folder / "encoder.onnx"), load_external_data=False)
        for t in model.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
        (folder / "encoder.onnx").write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def ext_bundle(tmp_path_factory, tiny_bundle) -> Path:
    folder = tmp_path_factory.mktemp("ext") / "bundle"
    shutil.copytree(tiny_bundle, folder)
    externalise(folder)
    _, m = load_manifest_unchecked(folder)
    rehash(folder, files={**m.files, EXTERNAL: ""})
    return folder


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_external_data_is_listed_hashed_and_loaded_from_memory(ext_bundle, tiny_bundle, tmp_path):
    refs = external_data((ext_bundle / "encoder.onnx").read_bytes(), "encoder.onnx")
    assert refs and {r.location for r in refs} == {EXTERNAL}
    _, m = load_manifest(ext_bundle)
    assert set(m.files) == {"encoder.onnx", "head.onnx", "parity.json", EXTERNAL}
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    want = BundleModels(tiny_bundle).encode(frames)
    models = BundleModels(ext_bundle)
    np.testing.assert_array_equal(models.encode(frames), want)
    # ONNX Runtime read the weights from the verified bytes: with the file gone afterwards the
    # loaded session still runs (it never opened encoder.onnx.data itself)
    moved = copy(ext_bundle, tmp_path / "moved")
    models = BundleModels(moved)
    (moved / EXTERNAL).unlink()
    np.testing.assert_array_equal(models.encode(frames), want)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["encoder.onnx", EXTERNAL, "head.onnx", "parity.json"])
def test_one_flipped_byte_in_any_listed_file_is_refused_naming_it(ext_bundle, tmp_path, name):
    b = copy(ext_bundle, tmp_path / "b")
    _, m = load_manifest(b)
    assert name in m.files  # the parametrisation covers every listed file
    _flip(b / name)
    with pytest.raises(LofiError, match=rf"^bundle file modified \(sha256 mismatch\): .*/{name}$"):
        load_manifest(b)
    with pytest.raises(LofiError, match=rf"modified \(sha256 mismatch\): .*/{name}$"):
        BundleModels(b)


def test_the_parametrisation_lists_every_file(ext_bundle):
    _, m = load_manifest(ext_bundle)
    assert set(m.files) == {"encoder.onnx", EXTERNAL, "head.onnx", "parity.json"}


def test_a_flipped_manifest_byte_is_refused(ext_bundle, tmp_path):
    b = copy(ext_bundle, tmp_path / "b")
    text = (b / "manifest.json").read_text().replace('"fp32"', '"fp33"')
    (b / "manifest.json").write_text(text)
    with pytest.raises(LofiError, match="manifest_sha256 does not match"):
        load_manifest(b)


@pytest.mark.parametrize("name", ["encoder.onnx", EXTERNAL])
def test_bytes_changed_after_the_check_are_refused_at_load(ext_bundle, tmp_path, name):
    # what is handed to ONNX Runtime is hashed as it is read: a file swapped between the
    # manifest check and the session load is refused, not run
    b = copy(ext_bundle, tmp_path / "b")
    _, m = load_manifest(b)
    _flip(b / name)
    with pytest.raises(LofiError, match=rf"modified \(sha256 mismatch\): .*/{name}$"):
        graph_files(b, m, "encoder.onnx")


@pytest.mark.parametrize(
    "location, reason",
    [
        ("../outside.bin", "points outside"),
        ("/etc/hostname", "points outside"),
        ("sub/../../outside.bin", "points outside"),
        ("unlisted.bin", r"a file the manifest does not list \(unhashed\)"),
    ],
)
def test_external_data_outside_or_unlisted_is_refused(tiny_bundle, tmp_path, location, reason):
    b = copy(tiny_bundle, tmp_path / "b")
    externalise(b, location)
    shutil.copy(b / EXTERNAL, b / "unlisted.bin")
    shutil.copy(b / EXTERNAL, tmp_path / "outside.bin")
    rehash(b)  # the graph re-hashed; the location it names is not listed
    with pytest.raises(LofiError, match=reason) as err:
        load_manifest(b)
    assert "external data of tensor" in str(err.value) and "\n" not in str(err.value)


def test_a_listed_file_that_is_a_symlink_out_of_the_bundle_is_refused(ext_bundle, tmp_path):
    b = copy(ext_bundle, tmp_path / "b")
    outside = tmp_path / "elsewhere.bin"
    (b / EXTERNAL).rename(outside)
    os.symlink(outside, b / EXTERNAL)
    with pytest.raises(LofiError, match=rf"{EXTERNAL}' resolves outside"):
        load_manifest(b)


@pytest.mark.parametrize("name", ["../parity.json", "/tmp/parity.json", "sub/x.bin", "..", "a\nb"])
def test_manifest_file_names_stay_inside(tiny_bundle, tmp_path, name):
    b = copy(tiny_bundle, tmp_path / "b")
    edit_manifest(b, lambda d: d["files"].update({name: "0" * 64}))
    with pytest.raises(LofiError, match="field files entry") as err:
        load_manifest(b)
    assert "\n" not in str(err.value)


def test_a_listed_file_nothing_uses_is_refused(tiny_bundle, tmp_path):
    b = copy(tiny_bundle, tmp_path / "b")
    (b / "notes.txt").write_text("x")
    _, m = load_manifest(b)
    rehash(b, files={**m.files, "notes.txt": ""})
    with pytest.raises(LofiError, match="lists notes.txt, which no graph or engine uses"):
        load_manifest(b)


def test_a_listed_folder_or_fifo_is_refused_not_read(tiny_bundle, tmp_path):
    b = copy(tiny_bundle, tmp_path / "b")
    (b / "parity.json").unlink()
    os.mkfifo(b / "parity.json")  # reading it would block forever
    with pytest.raises(LofiError, match="parity.json is not a regular file"):
        load_manifest(b)


def test_manifest_with_a_key_given_twice_is_refused(tiny_bundle, tmp_path):
    b = copy(tiny_bundle, tmp_path / "b")
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(
        text.replace('"precision"', '"precision": "fp16", "precision"')
    )
    with pytest.raises(LofiError, match="'precision' is given twice"):
        load_manifest(b)


@pytest.mark.parametrize(
    "labels, reason",
    [
        (["a", "a", "b", "c"], r"labels\[1\] 'a' is given twice"),
        (["a", "", "b", "c"], r"labels\[1\] must be a non-empty string"),
        (["a", " ", "b", "c"], r"labels\[1\] must be a non-empty string"),
        (["a", 7, "b", "c"], r"labels\[1\] must be a non-empty string, got 7"),
        ([], "labels must be a non-empty list"),
    ],
)
def test_labels_are_distinct_non_empty_strings(tiny_bundle, tmp_path, labels, reason):
    b = copy(tiny_bundle, tmp_path / "b")
    edit_manifest(b, lambda d: d.update(labels=labels))
    with pytest.raises(LofiError, match=reason):
        load_manifest(b)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (
            lambda d: d["labels"].append("e"),
            r"head.onnx: output cls_0 is float32 \(1, 4, \?\), "
            r"the manifest needs float32 \(1, 5, \?\) \(5 labels\)",
        ),
        (lambda d: d.update(labels=["a", "b", "c"]), r"\(3 labels\)"),
        (
            lambda d: d["input"].update(height=64),
            r"encoder.onnx: input frames is uint8 "
            r"\(\?, 4, 32, 32, 3\), the manifest needs uint8 \(\?, 4, 64, 32, 3\)",
        ),
        (lambda d: d["snippets"].update(k=8), r"encoder.onnx: input frames"),
        (lambda d: d["encoder"].update(feature_dim=32), r"encoder.onnx: output features"),
        (lambda d: d["head"].update(strides=[1, 2, 4]), r"head.onnx: outputs cls_0, .* needs"),
    ],
)
def test_manifest_and_graphs_must_agree_at_load(tiny_bundle, tmp_path, edit, reason):
    b = copy(tiny_bundle, tmp_path / "b")
    edit_manifest(b, edit)
    load_manifest(b)  # the manifest alone is consistent: the graphs are what disagree
    with pytest.raises(LofiError, match=reason) as err:
        BundleModels(b)
    assert "\n" not in str(err.value)
