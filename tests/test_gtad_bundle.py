"""A G-TAD checkpoint exports to a bundle (fp32 parity <= 1e-4) and runs through the torch-free
runtime's whole-video path: lofi-stream --results, then lofi-eval; the runtime equals the
trainer's own whole-video detection (GTADKind.detect) on the same video."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from lofi.runtime.bundle import GTAD_OUTPUTS, load_manifest
from lofi.runtime.decode import read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.snippets import resize_grid
from lofi.runtime.streaming import (
    StreamLocalizer,
    WholeVideoLocalizer,
    localize_offline,
    make_localizer,
)
from lofi.trainer.schema import Config

from tests.conftest import tiny_config
from tests.test_cli_errors import EVAL, STREAM, assert_one_line_error, run
from tests.test_torch_free import BLOCK

SMALL = {"dim": 16, "groups": 4, "width_group": 4, "k": 2, "samples": 4, "map_dim": 16}
LABELS = ["a", "b", "c", "d"]
VAL = ["synth_val_0000", "synth_val_0001"]


def gtad_cfg(**data) -> Config:
    cfg = tiny_config(head="gtad")
    cfg.model.gtad = replace(cfg.model.gtad, **SMALL, hidden_2d=8)
    cfg.data = replace(cfg.data, mode="resize", window=16, **data)
    cfg.postprocess.score_threshold = 0.0
    return cfg


def save_random(path: Path, cfg: Config, labels: list[str] = LABELS) -> Path:
    """A random-weight head-stage checkpoint of `cfg` (as conftest's random_checkpoint)."""
    from lofi.trainer.checkpoint import build_encoder, build_head, save_checkpoint

    torch.manual_seed(0)
    enc = build_encoder(cfg)
    head = build_head(cfg, enc.out_dim, len(labels))
    save_checkpoint(
        path,
        {
            "stage": "head",
            "config": cfg.to_dict(),
            "labels": labels,
            "fps": 8.0,
            "input_size": [32, 32],
            "encoder": enc.state_dict(),
            "head": head.state_dict(),
        },
    )
    return path


@pytest.fixture(scope="module")
def gtad_checkpoint(tmp_path_factory, tiny_synth) -> Path:
    """With Synth-TAL's labels, so lofi-eval can score its results."""
    from lofi.runtime.annotations import load_ground_truth

    labels = load_ground_truth(tiny_synth / "annotations.json").labels
    path = tmp_path_factory.mktemp("gtad_ckpt") / "checkpoint.pt"
    return save_random(path, gtad_cfg(), labels)


@pytest.fixture(scope="module")
def gtad_bundle(tmp_path_factory, gtad_checkpoint) -> Path:
    from lofi.export.bundle_writer import export_bundle

    folder, parity = export_bundle(gtad_checkpoint, tmp_path_factory.mktemp("gb") / "bundle")
    assert parity["ok"], parity
    return folder


def test_parity_and_manifest(gtad_bundle):
    parity = json.loads((gtad_bundle / "parity.json").read_text())
    assert parity["precision"] == "fp32" and parity["tolerance"] == 1e-4
    assert parity["encoder_max_abs_err"] <= 1e-4 and parity["head_max_abs_err"] <= 1e-4
    assert set(parity["head_outputs_max_abs_err"]) == set(GTAD_OUTPUTS)
    assert max(parity["head_outputs_max_abs_err"].values()) == parity["head_max_abs_err"]

    m = json.loads((gtad_bundle / "manifest.json").read_text())
    assert m["format_version"] == 3
    assert set(m["files"]) == {"encoder.onnx", "head.onnx", "parity.json"}
    assert m["snippets"] == {
        "protocol": "resize",
        "fps": 8.0,
        "k": 4,
        "frame_stride": 1,
        "length": 16,
    }
    head = m["head"]
    assert head["type"] == "gtad" and head["length"] == 16 and head["max_duration"] == 15
    assert head["outputs"] == ["start", "end", "confidence", "class_probs"]
    assert not {"strides", "window", "context", "max_reach"} & set(head)  # pyramid-only fields

    from lofi.trainer.gtad import ExportableGTAD

    assert ExportableGTAD.output_names == GTAD_OUTPUTS  # the trainer's names are the contract
    model = onnx.load(str(gtad_bundle / "head.onnx"))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [
        m["encoder"]["feature_dim"],
        16,
    ]
    assert [o.name for o in model.graph.output] == GTAD_OUTPUTS

    _, manifest = load_manifest(gtad_bundle)
    assert manifest.head_type == "gtad" and manifest.protocol == "resize"
    assert (manifest.length, manifest.max_duration) == (16, 15)
    assert manifest.video_grid(100) == resize_grid(8.0, 4, 1, 100, 16)


@pytest.mark.parametrize(
    "part, output",
    [
        ("start", "start"),
        ("end", "end"),
        ("localization", "confidence"),
        ("classifier", "class_probs"),
    ],
)
def test_parity_checks_every_head_output(gtad_bundle, gtad_checkpoint, part, output):
    """A PyTorch head that differs from head.onnx in one branch fails parity on that output."""
    from lofi.export.parity import check_parity
    from lofi.trainer.checkpoint import checkpoint_config, load_checkpoint, models_from_checkpoint

    ckpt = load_checkpoint(gtad_checkpoint)
    encoder, head = models_from_checkpoint(ckpt, gtad_checkpoint)
    last = getattr(head, part)
    last = last[-1] if isinstance(last, torch.nn.Sequential) else last
    with torch.no_grad():
        last.bias[0] += 1.0  # one channel: a softmax ignores a shift of all
    d = checkpoint_config(ckpt, gtad_checkpoint).data
    parity = check_parity(gtad_bundle, encoder, head, d.mean, d.std, d.k, 32, 32, "fp32")
    errors = parity["head_outputs_max_abs_err"]
    assert not parity["ok"] and errors[output] > 1e-3
    assert all(e <= 1e-4 for name, e in errors.items() if name != output)


def test_protocols_the_export_accepts(tmp_path, gtad_checkpoint):
    from lofi.export.bundle_writer import export_bundle

    pyramid = tiny_config()
    pyramid.data.mode = "resize"
    with pytest.raises(LofiError, match="data.mode=window"):
        export_bundle(save_random(tmp_path / "p.pt", pyramid), tmp_path / "b1")
    windowed = gtad_cfg()
    windowed.data.mode = "window"
    with pytest.raises(LofiError, match="data.mode=resize"):
        export_bundle(save_random(tmp_path / "g.pt", windowed), tmp_path / "b2")
    assert not list(tmp_path.glob("b*"))


def pytorch_detections(checkpoint: Path, caches: Path) -> dict[str, tuple[list, np.ndarray]]:
    """The trainer's own whole-video path (validation): the frame cache, full-fidelity
    features through the LoFi sampling op, GTADKind.detect. Per video: the segments and the
    (T, k, H, W, 3) frames of the snippets the trainer encodes."""
    from lofi.runtime.annotations import load_ground_truth
    from lofi.trainer.checkpoint import checkpoint_config, load_checkpoint, models_from_checkpoint
    from lofi.trainer.data import FrameCache, snippet_spec
    from lofi.trainer.features import extract_features
    from lofi.trainer.head_kinds import GTADKind

    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    encoder, head = models_from_checkpoint(ckpt, checkpoint)
    cache = FrameCache(caches / "cache")
    gt = load_ground_truth(caches / "annotations.json").subset("validation")
    spec = snippet_spec(cfg)
    feats = extract_features(encoder, cache, gt, spec, cfg, torch.device("cpu"))
    out = {}
    for vid in VAL:
        n = len(cache.frames(vid))
        grid, _ = spec.grid(cache.fps, n, 1)
        labels = ckpt["labels"]
        segs = GTADKind(head, cfg).detect(feats[vid], grid, n / cache.fps, labels, vid)
        out[vid] = segs, np.asarray(cache.frames(vid))[grid.frame_indices(0, spec.window, n)]
    return out


def assert_same_segments(got, want, atol=1e-5):
    assert len(got) == len(want) and len(want) > 10
    key = lambda s: (s.label, round(s.start, 3), round(s.end, 3))  # noqa: E731
    got_by, want_by = {key(s): s for s in got}, {key(s): s for s in want}
    assert set(got_by) == set(want_by)
    for k, w in want_by.items():
        g = got_by[k]
        assert abs(g.start - w.start) <= 1e-6 and abs(g.end - w.end) <= 1e-6
        assert abs(g.score - w.score) <= atol, (k, g.score, w.score)


def test_runtime_equals_pytorch_whole_video_detection(gtad_bundle, gtad_checkpoint, tiny_caches):
    want = pytorch_detections(gtad_checkpoint, tiny_caches)
    models = BundleModels(gtad_bundle)
    m = models.manifest
    encoded: list = []
    encode = models.encode
    models.encode = lambda x: encoded.append(x) or encode(x)  # what the runtime encodes
    events: list = []
    for vid in VAL:
        frames = read_video(tiny_caches / "videos" / f"{vid}.mp4", m.grid.fps, (m.height, m.width))
        encoded.clear()
        got, outputs = localize_offline(models, frames, vid)
        # the same snippets as the trainer (a random encoder barely tells frames apart, so the
        # segments alone would not see a wrong frame), the same outputs and segments
        np.testing.assert_array_equal(np.concatenate(encoded), want[vid][1])
        assert [o.shape for o in outputs] == [(16,), (16,), (2, 15, 16), (len(m.labels), 16)]
        assert_same_segments(got, want[vid][0])
        # the localizer lofi-stream uses: nothing before the end, then all of it at once
        events.clear()
        loc = make_localizer(models, vid, on_event=lambda s, now: events.append((s, now)))
        assert isinstance(loc, WholeVideoLocalizer)
        assert all(loc.push(f) == [] for f in frames) and not events
        assert loc.finish() == got and loc.results() == got
        assert [s for s, _ in events] == got
        assert {now for _, now in events} == {len(frames) / m.grid.fps}
    with pytest.raises(LofiError, match="whole video"):
        StreamLocalizer(models, "v")
    with pytest.raises(LofiError, match="not a pyramid head"):
        models.head(np.zeros((16, m.feature_dim), np.float32))


def test_stream_cli_without_torch_then_eval_cli(gtad_bundle, tiny_synth, tmp_path):
    videos = [str(tiny_synth / "videos" / f"{v}.mp4") for v in VAL]
    results, stats = tmp_path / "r.json", tmp_path / "s.json"
    argv = ["lofi-stream", *videos, "--bundle", str(gtad_bundle)]
    argv += ["--results", str(results), "--stats", str(stats)]
    code = (
        BLOCK
        + f"""
from lofi.runtime.cli import stream_cli
sys.argv = {argv!r}
try:
    stream_cli()
except SystemExit as e:
    assert not e.code, e.code
assert "torch" not in sys.modules
"""
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    res = json.loads(results.read_text())["results"]
    assert set(res) == set(VAL) and all(res[v] for v in VAL)
    for v in VAL:  # every event of a video is emitted at its end; the results keep them all
        mine = [e for e in events if e["video"] == v]
        assert len({e["emitted_at"] for e in mine}) == 1
        assert mine[0]["emitted_at"] >= max(e["end"] for e in mine)
        assert len(mine) == len(res[v])
    assert json.loads(stats.read_text())["videos"] == 2

    report = tmp_path / "map.json"
    gt = str(tiny_synth / "annotations.json")
    p = run(*EVAL, "--ground-truth", gt, "--predictions", str(results), "--json", str(report))
    assert p.returncode == 0, p.stderr
    maps = json.loads(report.read_text())["mAP"]
    assert len(maps) == 10 and all(0 <= x <= 1 for x in maps)


@pytest.mark.parametrize("source", ["rtsp://127.0.0.1:9/live", "http://127.0.0.1:9/x", "camera:0"])
def test_live_sources_are_refused_in_one_line(gtad_bundle, source):
    p = run(*STREAM, source, "--bundle", str(gtad_bundle))
    assert_one_line_error(p, "needs the whole video")


def test_fp16_bundle(tmp_path, gtad_checkpoint, gtad_bundle, tiny_synth):
    from lofi.export.bundle_writer import export_bundle

    folder, parity = export_bundle(gtad_checkpoint, tmp_path / "b16", fp16=True)
    assert parity["ok"] and parity["precision"] == "fp16" and parity["tolerance"] == 5e-2
    models16, models32 = BundleModels(folder), BundleModels(gtad_bundle)
    assert models16.manifest.precision == "fp16"
    m = models32.manifest
    frames = read_video(tiny_synth / "videos" / "synth_val_0000.mp4", m.grid.fps, (32, 32))
    _, out16 = localize_offline(models16, frames, "v")
    _, out32 = localize_offline(models32, frames, "v")
    for a, b in zip(out16, out32):
        assert np.abs(a - b).max() <= 5e-2
