"""The trainer end to end at toy size: every stage, every fidelity, resume, export."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from lofi.trainer.data import FrameCache, gather_batch, video_windows
from lofi.trainer.fidelity import FidelitySchedule
from lofi.trainer.stages import RUNNERS

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def caches(tiny_caches: Path) -> Path:
    return tiny_caches


def test_fidelity_schedules():
    long = FidelitySchedule("long_cycle")
    assert [long.at(e, 0).name for e in range(4)] == ["S", "T", "ST", "S"]
    short = FidelitySchedule("short_cycle", short_every=16)
    assert [short.at(0, s).name for s in (0, 15, 16, 32, 48)] == ["S", "S", "T", "ST", "S"]
    st = FidelitySchedule("ST").at(0, 0)
    assert (st.r_t, st.size(224, 224)) == (2, (158, 158))  # the paper's 50 x 158^2
    assert FidelitySchedule("T").at(0, 0).r_t == 4 and FidelitySchedule("S").at(0, 0).size(
        224, 224
    ) == (112, 112)


def test_t_lofi_windows_cover_the_same_span(caches):
    from lofi.runtime.annotations import load_ground_truth
    from lofi.trainer.data import snippet_spec as _spec

    cfg = tiny_config()
    gt = load_ground_truth(caches / "annotations.json").subset("training")
    cache = FrameCache(caches / "cache")
    full = video_windows(gt, cache, _spec(cfg), 1, gt.labels)
    lofi = video_windows(gt, cache, _spec(cfg), 4, gt.labels)
    assert full[0].length == 4 * lofi[0].length
    assert lofi[0].grid.hop == 4 * full[0].grid.hop
    frames, index = gather_batch(cache, lofi[:2])
    assert frames.dtype == torch.uint8 and index.shape == (2, lofi[0].length, cfg.data.k)


def test_t_lofi_resize_uses_fewer_snippets_over_the_whole_video(caches):
    from lofi.runtime.annotations import load_ground_truth
    from lofi.trainer.data import snippet_spec as _spec

    cfg = tiny_config()
    cfg.data = replace(cfg.data, mode="resize", window=32)
    gt = load_ground_truth(caches / "annotations.json").subset("training")
    cache = FrameCache(caches / "cache")
    full = video_windows(gt, cache, _spec(cfg), 1, gt.labels)
    lofi = video_windows(gt, cache, _spec(cfg), 4, gt.labels)
    assert len(full) == len(lofi) == len(gt.videos)  # one sample per video
    for f, t in zip(full, lofi):
        assert (f.length, t.length) == (32, 8)
        for w in (f, t):  # first snippet starts at frame 0, last one ends at the last frame
            idx = w.frame_index()
            assert idx[0, 0] == 0 and idx[-1, -1] >= w.n_frames - cfg.data.frame_stride


def test_all_stages_resume_and_export(caches, tmp_path):
    from lofi.export.bundle_writer import export_bundle

    d = caches
    cfg = tiny_config()
    cfg.data = replace(
        cfg.data,
        annotations=str(d / "annotations.json"),
        cache=str(d / "cache"),
        clips=str(d / "clips.json"),
        clip_cache=str(d / "clip_cache"),
    )
    cfg.pretrain = replace(cfg.pretrain, epochs=1, batch_size=4)
    pre = RUNNERS["pretrain"](cfg, tmp_path / "pre")
    cfg.lofi = replace(
        cfg.lofi, init=str(pre), epochs=1, batch_size=2, schedule="short_cycle", short_every=1
    )
    lofi = RUNNERS["lofi"](cfg, tmp_path / "lofi")
    cfg.lofi.epochs = 2
    RUNNERS["lofi"](cfg, tmp_path / "lofi", resume=True)
    import json

    metrics = json.loads((tmp_path / "lofi" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert set(metrics["epochs"][0]["fidelity"].split("+")) <= {"S", "T", "ST"}
    cfg.head = replace(cfg.head, init=str(lofi), epochs=2)
    head = RUNNERS["head"](cfg, tmp_path / "head")
    report = json.loads((tmp_path / "head" / "metrics.json").read_text())["validation"]
    assert len(report["mAP"]) == 10
    assert (tmp_path / "head" / "curves.png").is_file()
    _, parity = export_bundle(head, tmp_path / "bundle")
    assert parity["ok"]


def test_resize_mode_trains_and_is_refused_by_the_streaming_export(caches, tmp_path):
    # the ActivityNet protocol: `window` snippets spread over each whole video, T-LoFi uses fewer
    from lofi.export.bundle_writer import export_bundle
    from lofi.runtime.errors import LofiError

    d = caches
    cfg = tiny_config()
    cfg.data = replace(
        cfg.data,
        annotations=str(d / "annotations.json"),
        cache=str(d / "cache"),
        mode="resize",
        window=32,
    )
    cfg.lofi = replace(cfg.lofi, epochs=3, batch_size=2, schedule="long_cycle")
    lofi = RUNNERS["lofi"](cfg, tmp_path / "lofi")
    import json

    metrics = json.loads((tmp_path / "lofi" / "metrics.json").read_text())
    assert [e["fidelity"] for e in metrics["epochs"]] == ["S", "T", "ST"]
    cfg.head = replace(cfg.head, init=str(lofi), epochs=2)
    head = RUNNERS["head"](cfg, tmp_path / "head")
    assert len(json.loads((tmp_path / "head" / "metrics.json").read_text())["validation"]["mAP"])
    with pytest.raises(LofiError, match="data.mode=window"):
        export_bundle(head, tmp_path / "bundle")


def test_acp_plus_finetunes_on_the_untrimmed_segments(caches, tmp_path):
    from lofi.runtime.annotations import load_ground_truth
    from lofi.trainer.checkpoint import load_checkpoint
    from lofi.trainer.data import segment_clips

    from tests.conftest import with_data

    gt = load_ground_truth(caches / "annotations.json")
    cache = FrameCache(caches / "cache")
    clips = segment_clips(gt, cache, "training")
    segs = [s for i in gt.subset("training").videos.values() for s in i.segments]
    assert len(clips) == len(segs)
    for c, s in zip(clips, segs):  # frames of the instance itself, at the cache's fps
        assert c.video == s.video and gt.labels[c.label] == s.label
        assert abs(c.first - s.start * cache.fps) <= 0.5 and abs(c.last - s.end * cache.fps) <= 0.5
    cfg = with_data(tiny_config(), caches)
    cfg.pretrain = replace(cfg.pretrain, epochs=1, batch_size=4)
    acp = RUNNERS["pretrain"](cfg, tmp_path / "acp")
    cfg.pretrain = replace(cfg.pretrain, source="segments", init=str(acp), lr=0.0)
    plus = RUNNERS["pretrain"](cfg, tmp_path / "acp_plus")
    a, b = load_checkpoint(acp), load_checkpoint(plus)
    assert b["clip_labels"] == gt.labels and a["clip_labels"] != gt.labels
    # lr 0: the encoder is exactly the ACP one it started from (BN statistics aside)
    for k, v in a["encoder"].items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, b["encoder"][k]), k
