"""Bundles that cannot lie: a failed parity is never published, `lofi-export --check` and
`lofi-stream` refuse edited, incomplete or failed bundles in one line, and `--trt` without
TensorRT or a GPU stops in one line before writing anything."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from lofi.runtime.bundle import DIGEST_KEY, load_manifest, manifest_digest
from lofi.runtime.errors import LofiError

from tests.test_cli_errors import STREAM, assert_one_line_error, run

EXPORT = ("lofi.export.cli", "main")


@pytest.fixture(scope="module")
def failed_bundle(tmp_path_factory, random_checkpoint) -> Path:
    """What an export whose parity fails leaves behind: OUT.partial, complete but failed."""
    from lofi.export import bundle_writer

    out = tmp_path_factory.mktemp("failed") / "bundle"
    real = bundle_writer.check_parity

    def off_by_a_bit(*args, **kwargs):
        parity = real(*args, **kwargs)
        parity.update(encoder_max_abs_err=3e-3, ok=False)
        return parity

    bundle_writer.check_parity = off_by_a_bit
    try:
        with pytest.raises(LofiError, match=r"parity failed .*not published; see .*partial"):
            bundle_writer.export_bundle(random_checkpoint, out)
    finally:
        bundle_writer.check_parity = real
    assert not out.exists()
    partial = out.with_name("bundle.partial")
    assert (partial / "manifest.json").is_file() and (partial / "parity.json").is_file()
    return partial


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def bad_bundles(tmp_path: Path, good: Path, failed: Path) -> list[tuple[Path, str]]:
    """(bundle, what the one-line refusal says) for each way a bundle can lie."""
    cases = []
    b = _copy(good, tmp_path / "edited_manifest")
    _edit_json(b / "manifest.json", lambda m: m["postprocess"].update(score_threshold=0.0))
    cases.append((b, "does not match the manifest"))
    b = _copy(good, tmp_path / "edited_parity")
    _edit_json(b / "parity.json", lambda p: p.update(encoder_max_abs_err=0.0))
    cases.append((b, "modified (sha256 mismatch)"))
    b = _copy(good, tmp_path / "deleted_parity")
    (b / "parity.json").unlink()
    cases.append((b, "missing"))
    b = _copy(good, tmp_path / "onnx")
    with open(b / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    cases.append((b, "modified (sha256 mismatch)"))
    cases.append((failed, "failed its parity check"))
    # a consistent manifest (digest recomputed) that no longer lists parity.json
    b = _copy(good, tmp_path / "unlisted_parity")

    def unlist(m):
        del m["files"]["parity.json"]
        m[DIGEST_KEY] = manifest_digest(m)

    _edit_json(b / "manifest.json", unlist)
    cases.append((b, "does not list parity.json"))
    # an older format (it could not show its checks) is refused with what to do
    b = _copy(good, tmp_path / "v2")

    def older(m):
        m["format_version"] = 2
        m[DIGEST_KEY] = manifest_digest(m)

    _edit_json(b / "manifest.json", older)
    cases.append((b, "version 2 predates checked bundles"))
    return cases


def test_fresh_bundle_passes_check(tiny_bundle):
    p = run(*EXPORT, "--check", str(tiny_bundle))
    assert p.returncode == 0, p.stderr
    assert "ok (format version 3" in p.stdout and "graphs TensorRT-ready" in p.stdout
    assert "no TensorRT engines" in p.stdout
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert set(m["files"]) == {"encoder.onnx", "head.onnx", "parity.json"}
    assert m[DIGEST_KEY] == manifest_digest(m)


def test_check_stream_and_the_runtime_refuse_every_lying_bundle(
    tmp_path, tiny_bundle, failed_bundle, tiny_synth
):
    video = str(tiny_synth / "videos" / "synth_val_0000.mp4")
    for bundle, reason in bad_bundles(tmp_path, tiny_bundle, failed_bundle):
        with pytest.raises(LofiError, match=re.escape(reason)):
            load_manifest(bundle)
        assert_one_line_error(run(*EXPORT, "--check", str(bundle)), reason)
        assert_one_line_error(run(*STREAM, video, "--bundle", str(bundle)), reason)


def test_failed_parity_exits_1_and_publishes_nothing(tmp_path, random_checkpoint, monkeypatch):
    from click.testing import CliRunner
    from lofi.export import bundle_writer
    from lofi.export.cli import main

    real = bundle_writer.check_parity
    monkeypatch.setattr(
        bundle_writer, "check_parity", lambda *a, **k: {**real(*a, **k), "ok": False}
    )
    out = tmp_path / "b"
    result = CliRunner().invoke(main, [str(random_checkpoint), str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: parity failed"), result.output
    assert not out.exists() and (tmp_path / "b.partial" / "parity.json").is_file()


def test_trt_without_tensorrt_or_gpu_is_one_line(tmp_path, random_checkpoint):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = tmp_path / "trt"
    p = run(*EXPORT, str(random_checkpoint), str(out), "--trt")
    assert_one_line_error(p, "--trt needs TensorRT")
    assert not out.exists() and not (tmp_path / "trt.partial").exists()


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--check", "B", "C"], "--check takes only the bundle folder"),
        (["C"], "give CHECKPOINT and OUT"),
        (["C", "O", "--trt-shapes", "batch=1:2:3"], "apply only with --trt"),
    ],
)
def test_cli_usage_errors(tmp_path, args, reason):
    assert_one_line_error(run(*EXPORT, *args, cwd=tmp_path), reason)
