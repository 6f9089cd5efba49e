"""ActivityNet-1.3: the shipped config is the paper's setting, and a miniature ActivityNet (the
official JSON layout, files named v_<id>.mp4, one listed video missing as in most copies) runs
through lofi-data prepare, a one-epoch lofi-train, lofi-export, lofi-stream and lofi-eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lofi.runtime.annotations import load_ground_truth
from lofi.runtime.evaluation import TIOU_PRESETS
from lofi.trainer.config import load_config
from lofi.trainer.data import snippet_spec

from tests.test_thumos import REPO, TINY_MODEL, cli

CONFIG = REPO / "configs" / "tsm_r18_anet.yaml"
GTAD_SMALL = ["dim=16", "groups=4", "width_group=4", "k=2", "samples=4", "map_dim=16"]


def test_the_anet_config_is_the_papers_setting():
    cfg = load_config(CONFIG)
    assert cfg.model.backbone == "resnet18" and cfg.model.head == "gtad"
    lofi = cfg.lofi
    assert (lofi.batch_size, lofi.optimizer, lofi.lr, lofi.lr_halve_every) == (16, "sgd", 0.1, 5)
    assert (lofi.momentum, lofi.weight_decay, lofi.schedule) == (0.0, 1e-4, "long_cycle")
    spec = snippet_spec(cfg)
    assert (spec.mode, spec.window) == ("resize", 100)
    # L = 100 snippets over the whole of any video; T-LoFi (r_t 4) 25, ST-LoFi (r_t 2) 50
    for n_frames in (90, 960, 5000):
        grid, length = spec.grid(8.0, n_frames, 1)
        idx = grid.frame_indices(0, length, n_frames)
        assert length == 100 and idx[0, 0] == 0 and idx[-1, -1] == n_frames - 1
        assert spec.grid(8.0, n_frames, 4)[1] == 25 and spec.grid(8.0, n_frames, 2)[1] == 50
    from lofi.trainer.checkpoint import build_encoder, build_head

    encoder = build_encoder(cfg, pretrained=False)
    assert 11e6 < sum(p.numel() for p in encoder.parameters()) < 12e6  # TSM-R18, 12M
    assert build_head(cfg, encoder.out_dim, 200) is not None


def mini_anet(root: Path, synth: Path) -> tuple[Path, Path]:
    """Synth-TAL in ActivityNet-1.3's layout: version, taxonomy, database entries with url,
    resolution, subset, duration and annotations; a testing video without annotations; files
    named v_<id>.mp4; one training video listed but not there."""
    gt = load_ground_truth(synth / "annotations.json")
    videos = root / "videos"
    videos.mkdir(parents=True)
    db = {}
    for i, (vid, info) in enumerate(sorted(gt.videos.items())):
        yid = f"Yt{i:03d}abcXY"
        shutil.copy(synth / "videos" / f"{vid}.mp4", videos / f"v_{yid}.mp4")
        db[yid] = {
            "url": f"https://youtube.example/watch?v={yid}",
            "duration": info.duration,
            "resolution": "32x32",
            "subset": info.subset,
            "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in info.segments],
        }
    db["Yt999gone00"] = dict(db["Yt000abcXY"], url="https://youtube.example/watch?v=gone")
    shutil.copy(videos / "v_Yt000abcXY.mp4", videos / "v_Yt998test0.mp4")
    db["Yt998test0"] = {"url": "", "duration": 10.0, "subset": "testing", "annotations": []}
    taxonomy = [{"nodeName": lab, "parentName": "Root"} for lab in gt.labels]
    path = root / "activity_net.v1-3.min.json"
    path.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": taxonomy, "database": db}))
    return path, videos


@pytest.mark.slow
def test_mini_activitynet_with_a_missing_video_to_evaluated_stream(tmp_path, tiny_synth):
    gt, videos = mini_anet(tmp_path, tiny_synth)
    cache = tmp_path / "cache"
    p = cli("lofi-data", "prepare", str(gt), str(videos), str(cache), "--fps", "8",
            "--size", "32x32", "--workers", "2", "--subset", "training",
            "--subset", "validation", ok=False)  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"error: skipped video 'Yt999gone00': video for 'Yt999gone00' not found under {videos}"
    ]
    assert "4 decoded, 0 already there, 1 skipped" in p.stdout  # not the testing video

    run = tmp_path / "run"
    p = cli("lofi-train", "lofi", "--config", str(CONFIG),
            "--set", f"data.annotations={gt}", "--set", f"data.cache={cache}",
            *sum((["--set", s] for s in TINY_MODEL), []),
            *sum((["--set", f"model.gtad.{s}"] for s in GTAD_SMALL), []),
            "--set", "model.gtad.hidden_2d=8", "--set", "data.window=16",
            "--set", "data.k=4", "--set", "lofi.t_ratio=2",
            "--run-dir", str(run), "--device", "cpu")  # fmt: skip
    assert (
        "warning: 1 of 5 annotated videos are not in the frame cache "
        f"{cache} and are left out (1 training; e.g. 'Yt999gone00')" in p.stderr
    )
    ckpt = p.stdout.strip().splitlines()[-1].split("checkpoint ", 1)[1]

    bundle = tmp_path / "bundle"
    cli("lofi-export", ckpt, str(bundle))
    db = json.loads(gt.read_text())["database"]
    val = [v for v, e in db.items() if e["subset"] == "validation"]
    results = tmp_path / "results.json"
    files = [str(videos / f"v_{v}.mp4") for v in val]
    cli("lofi-stream", *files, "--bundle", str(bundle), "--results", str(results), "--quiet")
    assert set(json.loads(results.read_text())["results"]) == {f"v_{v}" for v in val}

    report = tmp_path / "map.json"
    p = cli("lofi-eval", "--ground-truth", str(gt), "--predictions", str(results),
            "--tiou", "anet", "--json", str(report))  # fmt: skip
    assert p.stdout.splitlines()[0].split() == ["mAP@", "0.50", "0.75", "0.95", "avg"]
    m = json.loads(report.read_text())
    assert m["tiou"] == TIOU_PRESETS["anet"]
    assert set(m["per_class"]) == {s["label"] for v in val for s in db[v]["annotations"]}
    # the per-class table: every class's AP at every threshold, then its average
    lines = p.stdout.splitlines()
    assert lines[2].split()[0] == "class"
    n = len(m["tiou"])
    shown = {r.rsplit(maxsplit=n + 1)[0]: r.rsplit(maxsplit=n + 1)[1:] for r in lines[3:]}
    assert set(shown) == set(m["per_class"])
    for label, aps in m["per_class"].items():
        want = [100 * a for a in aps] + [100 * sum(aps) / n]
        assert [float(x) for x in shown[label]] == pytest.approx(want, abs=0.006)
    # results named v_<id> (from the files) count for <id> exactly as if named so
    data = json.loads(results.read_text())
    data["results"] = {k[2:]: v for k, v in data["results"].items()}
    (tmp_path / "plain.json").write_text(json.dumps(data))
    cli("lofi-eval", "--ground-truth", str(gt), "--predictions", str(tmp_path / "plain.json"),
        "--tiou", "anet", "--json", str(tmp_path / "plain_map.json"))  # fmt: skip
    assert json.loads((tmp_path / "plain_map.json").read_text()) == m
