"""Shared fixtures: a tiny Synth-TAL set and a bundle exported from a random-weight model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lofi.trainer.schema import Config
from lofi.trainer.synth import SynthConfig, generate

TINY = SynthConfig(
    train_videos=2,
    val_videos=2,
    classes=4,
    clip_classes=4,
    clips_per_class=2,
    height=32,
    width=32,
    fps=8.0,
    min_duration=10.0,
    max_duration=14.0,
    seed=3,
)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, TINY)
    return out


@pytest.fixture(scope="session")
def tiny_caches(tiny_synth: Path) -> Path:
    """tiny_synth decoded into the trainer's frame caches (cache/, clip_cache/)."""
    from lofi.trainer.data import prepare_cache

    d = tiny_synth
    if not (d / "cache" / "index.json").is_file():
        prepare_cache(d / "annotations.json", d / "videos", d / "cache", 8.0, (32, 32))
        prepare_cache(d / "clips.json", d / "clips", d / "clip_cache", 8.0, (32, 32))
    return d


def with_data(cfg: Config, d: Path) -> Config:
    cfg.data = replace(
        cfg.data,
        annotations=str(d / "annotations.json"),
        cache=str(d / "cache"),
        clips=str(d / "clips.json"),
        clip_cache=str(d / "clip_cache"),
    )
    return cfg


def tiny_config(**model) -> Config:
    from lofi.trainer.config import load_config

    cfg = load_config(
        None,
        [
            "model.width=8",
            "model.head_dim=16",
            "model.head_window=16",
            "data.window=32",
            "model.max_reach=16",
        ],
    )
    cfg.model = replace(cfg.model, **model)
    return cfg


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    import torch
    from lofi.trainer.checkpoint import build_encoder, build_head, save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.postprocess.score_threshold = 0.3
    enc = build_encoder(cfg)
    head = build_head(cfg, enc.out_dim, 4)
    with torch.no_grad():  # a random head fires everywhere; spread its logits so NMS has work,
        head.cls_out.bias.fill_(0.0)  # and reach far so segments overlap across head windows
        head.reg_out.bias.fill_(2.0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(
        path,
        {
            "stage": "head",
            "config": cfg.to_dict(),
            "labels": ["a", "b", "c", "d"],
            "fps": 8.0,
            "input_size": [32, 32],
            "encoder": enc.state_dict(),
            "head": head.state_dict(),
        },
    )
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, random_checkpoint) -> Path:
    from lofi.export.bundle_writer import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    folder, parity = export_bundle(random_checkpoint, out)
    assert parity["ok"], parity
    return folder


@pytest.fixture(scope="session")
def synth_h264_420(tiny_synth: Path, tmp_path_factory) -> Path:
    """tiny_synth's first validation video as NVDEC decodes it: 8-bit 4:2:0 H.264, profile High,
    CRF 10 (the Synth-TAL files are lossless H.264, profile High 4:4:4 Predictive, which NVDEC
    does not decode). Its frames are the lossless file's YUV planes, not converted again,
    enlarged 8x by pixel repetition to 256x256 (NVDEC has a smallest coded size, which the
    32x32 original may be under); tagged BT.601 limited range, FFmpeg's default for untagged
    video, so every decoder converts to RGB with the same matrix."""
    import av
    import numpy as np

    src = tiny_synth / "videos" / "synth_val_0000.mp4"
    out = tmp_path_factory.mktemp("h264_420") / "synth_val_0000_yuv420p.mp4"
    k = 8
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        s_in = inp.streams.video[0]
        h, w = s_in.codec_context.height, s_in.codec_context.width
        s = dst.add_stream("libx264", rate=s_in.average_rate)
        s.height, s.width, s.pix_fmt = h * k, w * k, "yuv420p"
        s.codec_context.thread_count = 1
        s.options = {
            "crf": "10",
            "preset": "veryfast",
            "profile": "high",
            "g": "32",
            "x264-params": "colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m:range=tv",
        }
        for i, frame in enumerate(inp.decode(s_in)):
            planes = [
                np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
                for p in frame.planes
            ]
            # from_ndarray's yuv420p layout: the Y rows, then U's and V's, each row two of theirs
            big = [np.kron(p, np.ones((k, k), np.uint8)).reshape(-1, w * k) for p in planes]
            yuv = av.VideoFrame.from_ndarray(np.concatenate(big), format="yuv420p")
            yuv.pts = i
            for packet in s.encode(yuv):
                dst.mux(packet)
        for packet in s.encode():
            dst.mux(packet)
    return out
