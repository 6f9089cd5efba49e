"""THUMOS14 from its official annotation layout to a deployed model: a miniature THUMOS14 (the
official per-class text files and Ambiguous files over a few generated videos) runs through
lofi-data convert-thumos / prepare, a one-epoch lofi-train, lofi-export, lofi-stream and
lofi-eval; the converter's rules are checked one by one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lofi.runtime.annotations import load_ground_truth
from lofi.runtime.errors import LofiError
from lofi.runtime.evaluation import TIOU_PRESETS
from lofi.trainer.thumos import CLASSES, convert_thumos, read_annotation_file

from tests.test_cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "model.backbone=tiny",
    "model.width=8",
    "model.head_dim=16",
    "model.weights=null",
    "lofi.epochs=1",
    "lofi.batch_size=2",
    "lofi.lr=0.001",
    "lofi.optimizer=adamw",
]
SCRIPTS = {
    "lofi-data": ("lofi.trainer.cli", "data_cli"),
    "lofi-train": ("lofi.trainer.cli", "train_cli"),
    "lofi-export": ("lofi.export.cli", "main"),
    "lofi-stream": ("lofi.runtime.cli", "stream_cli"),
    "lofi-eval": ("lofi.runtime.cli", "eval_cli"),
}


def cli(script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """One command as a user types it (a fresh process); `ok` asserts exit status 0."""
    mod, fn = SCRIPTS[script]
    code = f"import sys; from {mod} import {fn} as f; sys.argv = [{script!r}, *sys.argv[1:]]; f()"
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in p.stderr, p.stderr
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def mini_thumos(root: Path, synth: Path) -> tuple[Path, list[Path], dict[str, str]]:
    """Synth-TAL's videos and labels written the way THUMOS14 ships: `annotation/<Class>_val.txt`
    and `<Class>_test.txt` for all 20 classes (most empty), Ambiguous files, videos named
    video_validation_* / video_test_* in two folders. Returns (annotation dir, video dirs,
    {THUMOS-style id: Synth-TAL id})."""
    gt = load_ground_truth(synth / "annotations.json")
    names = {lab: CLASSES[i] for i, lab in enumerate(sorted(gt.labels))}
    ann = root / "annotation"
    dirs = {"training": root / "validation", "validation": root / "TH14_test_set_mp4"}
    for d in (ann, *dirs.values()):
        d.mkdir(parents=True)
    lines: dict[tuple[str, str], list[str]] = {(c, s): [] for c in CLASSES for s in ("val", "test")}
    ids = {}
    for i, (vid, info) in enumerate(sorted(gt.videos.items())):
        split = "val" if info.subset == "training" else "test"
        new = f"video_{'validation' if split == 'val' else 'test'}_{i:07d}"
        ids[new] = vid
        shutil.copy(synth / "videos" / f"{vid}.mp4", dirs[info.subset] / f"{new}.mp4")
        for s in info.segments:
            lines[(names[s.label], split)].append(f"{new}  {s.start:.1f} {s.end:.1f} ")
    for (cls, split), rows in lines.items():
        (ann / f"{cls}_{split}.txt").write_text("".join(r + "\n" for r in rows))
    (ann / "Ambiguous_val.txt").write_text("video_validation_0000000 0.5 1.5\n")
    (ann / "Ambiguous_test.txt").write_text("video_test_0000002 0.2 1.0\n")
    return ann, list(dirs.values()), ids


@pytest.fixture(scope="module")
def thumos(tmp_path_factory, tiny_synth) -> tuple[Path, Path, list[Path], dict[str, str]]:
    root = tmp_path_factory.mktemp("thumos14")
    return root, *mini_thumos(root, tiny_synth)


def test_convert_keeps_the_fields_conventions(thumos, tiny_synth):
    root, ann, dirs, ids = thumos
    conv = convert_thumos(ann, dirs)
    db = conv.database
    assert not conv.missing and not conv.unknown and not conv.dropped
    subsets = {v: e["subset"] for v, e in db.items()}
    assert subsets == {
        "video_test_0000002": "validation",
        "video_test_0000003": "validation",
        "video_validation_0000000": "training",
        "video_validation_0000001": "training",
    }
    synth = load_ground_truth(tiny_synth / "annotations.json")
    clipped = 0
    for vid, old in ids.items():
        # durations from the video files (the encoder's last frame ends at the synth duration)
        info = synth.videos[old]
        duration = db[vid]["duration"]
        assert duration == pytest.approx(info.duration, abs=0.2)
        ends = [round(s.end, 1) for s in sorted(info.segments, key=lambda s: s.start)]
        clipped += sum(e > duration for e in ends)
        assert [a["segment"][1] for a in db[vid]["annotations"]] == [min(e, duration) for e in ends]
        assert Path(db[vid]["path"]).is_file()
    assert conv.clipped == clipped > 0  # a segment running past the video's end is cut there
    assert db["video_validation_0000000"]["ambiguous"] == [[0.5, 1.5]]
    assert db["video_test_0000002"]["ambiguous"] == [[0.2, 1.0]]
    assert "ambiguous" not in db["video_test_0000003"]
    labels = {a["label"] for e in db.values() for a in e["annotations"]}
    assert labels <= set(CLASSES[:4])


def test_convert_reports_missing_videos_empty_segments_and_bad_lines(thumos, tmp_path):
    _, ann, dirs, _ = thumos
    copy = tmp_path / "ann"
    shutil.copytree(ann, copy)
    with open(copy / "Billiards_test.txt", "a") as f:
        f.write("video_test_0000009 3.0 3.0\nvideo_test_0000009 1.0 2.0\n")
        f.write("video_test_0000008 1.0 2.0\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "video_test_0000008.mp4").write_text("not a video")
    missing = []
    conv = convert_thumos(copy, [*dirs, broken], lambda v, why: missing.append((v, why)))
    assert conv.missing == ["video_test_0000008", "video_test_0000009"]
    assert "cannot read video" in missing[0][1] and "no video file" in missing[1][1]
    assert conv.dropped and conv.dropped[0].startswith("Billiards_test.txt:")
    p = cli("lofi-data", "convert-thumos", str(copy), str(tmp_path / "o.json"),
            *sum((["--videos", str(d)] for d in [*dirs, broken]), []))  # fmt: skip
    assert "2 videos missing" in p.stdout
    assert "warning: left out video 'video_test_0000009'" in p.stderr

    (copy / "Billiards_test.txt").write_text("video_test_0000002 1.0\n")
    with pytest.raises(LofiError, match=r"Billiards_test.txt:1: expected 'video start end'"):
        read_annotation_file(copy / "Billiards_test.txt")
    (copy / "Billiards_test.txt").write_text("video_test_0000002 1.0 soon\n")
    assert_one_line_error(
        cli("lofi-data", "convert-thumos", str(copy), str(tmp_path / "o.json"),
            "--videos", str(dirs[0]), ok=False),
        "Billiards_test.txt:1: start and end must be seconds",
    )  # fmt: skip
    (copy / "Billiards_test.txt").unlink()
    assert_one_line_error(
        cli("lofi-data", "convert-thumos", str(copy), str(tmp_path / "o.json"),
            "--videos", str(dirs[0]), ok=False),
        "class Billiards has no Billiards_test.txt",
    )  # fmt: skip
    assert_one_line_error(
        cli("lofi-data", "convert-thumos", str(tmp_path / "none"), str(tmp_path / "o.json"),
            "--videos", str(dirs[0]), ok=False),
        "annotation folder not found",
    )  # fmt: skip


@pytest.mark.slow
def test_mini_thumos14_from_official_files_to_evaluated_stream(thumos, tmp_path):
    root, ann, dirs, _ = thumos
    gt = tmp_path / "thumos14.json"
    videos = sum((["--videos", str(d)] for d in dirs), [])
    p = cli("lofi-data", "convert-thumos", str(ann), str(gt), *videos)
    assert "2 training (val) and 2 validation (test) videos" in p.stdout
    assert "2 ambiguous spans; 0 videos missing" in p.stdout

    cache = tmp_path / "cache"
    p = cli("lofi-data", "prepare", str(gt), str(root), str(cache), "--fps", "8",
            "--size", "32x32", "--workers", "2")  # fmt: skip
    assert "4 decoded, 0 already there, 0 skipped" in p.stdout
    assert json.loads((cache / "index.json").read_text())["format"] == "jpeg"

    run = tmp_path / "run"
    p = cli("lofi-train", "lofi", "--config", str(REPO / "configs/thumos14.yaml"),
            "--set", f"data.annotations={gt}", "--set", f"data.cache={cache}",
            *sum((["--set", s] for s in TINY_MODEL), []),
            "--set", "data.window=32", "--set", "model.head_window=16",
            "--set", "model.max_reach=16",
            "--run-dir", str(run), "--device", "cpu")  # fmt: skip
    ckpt = p.stdout.strip().splitlines()[-1].split("checkpoint ", 1)[1]
    # validation during training scores at the config's THUMOS14 thresholds too
    validation = json.loads((run / "metrics.json").read_text())
    assert validation["validation"]["tiou"] == TIOU_PRESETS["thumos"]
    assert "val_mAP@0.3" in validation["epochs"][-1]

    bundle = tmp_path / "bundle"
    cli("lofi-export", ckpt, str(bundle))
    tests = sorted(dirs[1].glob("*.mp4"))
    results = tmp_path / "results.json"
    cli("lofi-stream", *map(str, tests), "--bundle", str(bundle), "--results", str(results),
        "--quiet")  # fmt: skip
    assert set(json.loads(results.read_text())["results"]) == {t.stem for t in tests}

    report = tmp_path / "map.json"
    p = cli("lofi-eval", "--ground-truth", str(gt), "--predictions", str(results),
            "--tiou", "thumos", "--json", str(report))  # fmt: skip
    assert "0.30    0.40    0.50    0.60    0.70" in p.stdout
    m = json.loads(report.read_text())
    assert m["tiou"] == TIOU_PRESETS["thumos"] and len(m["mAP"]) == 5
    assert set(m["per_class"]) <= set(CLASSES[:4]) and m["per_class"]
