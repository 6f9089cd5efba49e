"""Synth-TAL: a deterministic synthetic TAL benchmark rendered with numpy and written as H.264.

Untrimmed classes come in pairs that differ only in temporal direction, so one frame cannot tell
them apart; the trimmed-clip set uses other motions from the same renderer (it plays Kinetics to
the untrimmed set's ActivityNet). Every video is seeded by (seed, set, index) alone, so output
does not depend on generation order.

Every file name is built from fixed prefixes and indices, and each path is checked to resolve
inside OUT before anything is written (a symlink there leading elsewhere is refused); every
number of the config has physical bounds (runtime/bounds.py), and one video's frames, which are
held in memory while it renders, must fit in MAX_VIDEO_BYTES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo, ground_truth_json
from lofi.runtime.bounds import DURATION, FPS, FRACTION, FRAME_SIDE, SEED, Bound
from lofi.runtime.errors import LofiError
from lofi.runtime.outputs import write_json
from lofi.runtime.paths import inside

UNTRIMMED_MOTIONS = [
    "slide_left",
    "slide_right",
    "rise",
    "fall",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
]
CLIP_MOTIONS = [
    "diag_up_right",
    "diag_down_left",
    "diag_up_left",
    "diag_down_right",
    "orbit_cw",
    "orbit_ccw",
    "shake",
    "pulse",
]
SHAPES = ["square", "triangle", "ellipse", "cross", "ell"]
VIDEOS = Bound(1, 100_000, integer=True)  # videos of a subset, clips of a class
MAX_VIDEO_BYTES = 2**31  # one video's uint8 frames, held in memory while it renders


@dataclass(frozen=True)
class SynthConfig:
    train_videos: int = 64
    val_videos: int = 24
    classes: int = 6
    clip_classes: int = 8
    clips_per_class: int = 80
    height: int = 64
    width: int = 64
    fps: float = 8.0
    min_duration: float = 20.0
    max_duration: float = 50.0
    min_action: float = 1.0
    max_action: float = 12.0
    seed: int = 0
    difficulty: float = 0.5

    def validate(self) -> None:
        """Every field within physical bounds, before any work (one LofiError line)."""
        bounds = {
            "train_videos": VIDEOS,
            "val_videos": VIDEOS,
            "clips_per_class": VIDEOS,
            "height": FRAME_SIDE,
            "width": FRAME_SIDE,
            "fps": FPS,
            "min_duration": DURATION,
            "max_duration": DURATION,
            "min_action": DURATION,
            "max_action": DURATION,
            "seed": SEED,
            "difficulty": FRACTION,
        }
        for name, bound in bounds.items():
            bound.check(getattr(self, name), f"synth config {name}")
        if not 2 <= self.classes <= len(UNTRIMMED_MOTIONS):
            raise LofiError(f"--classes must be in 2..{len(UNTRIMMED_MOTIONS)}")
        if not 2 <= self.clip_classes <= len(CLIP_MOTIONS):
            raise LofiError(f"--clip-classes must be in 2..{len(CLIP_MOTIONS)}")
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise LofiError("frame height and width must be even and >= 16")
        if not self.min_duration <= self.max_duration:
            raise LofiError("need 0 < min duration <= max duration")
        if not self.min_action <= self.max_action:
            raise LofiError("need 0 < min action <= max action")
        frames = math.ceil(self.max_duration * self.fps)
        size = frames * self.height * self.width * 3
        if size > MAX_VIDEO_BYTES:
            raise LofiError(
                f"synth config: one video would take {size:.2g} bytes of frames "
                f"({frames} frames of {self.height}x{self.width}); at most {MAX_VIDEO_BYTES:.2g}: "
                "lower the duration, fps or size"
            )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency texture: coarse random grid, bilinearly upsampled, 3 channels."""
    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.random((gh, gw, 3))
    ys = np.linspace(0, gh - 1.001, h)
    xs = np.linspace(0, gw - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bot = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like field in the actor's unit frame (negative inside)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "ellipse":
        return np.sqrt(u**2 + (v / 0.55) ** 2) - 1.0
    if shape == "triangle":
        n = [(0.0, -1.0), (0.866, 0.5), (-0.866, 0.5)]
        return np.max([u * a + v * b for a, b in n], axis=0) - 0.5
    if shape == "cross":
        return np.minimum(
            np.maximum(np.abs(u) - 1, np.abs(v) - 0.35), np.maximum(np.abs(u) - 0.35, np.abs(v) - 1)
        )
    return np.minimum(
        np.maximum(np.abs(u + 0.3) - 0.35, np.abs(v) - 1),
        np.maximum(np.abs(u) - 0.65, np.abs(v - 0.65) - 0.35),
    )


class Scene:
    """Background, distractors and one actor; `step(motion)` advances one frame."""

    def __init__(self, rng: np.random.Generator, cfg: SynthConfig):
        self.rng, self.cfg = rng, cfg
        h, w, d = cfg.height, cfg.width, cfg.difficulty
        self.unit = min(h, w) / 64.0
        self.jitter_max = int(round((1 + 2 * d) * self.unit))
        j = self.jitter_max
        self.background = 0.25 + 0.5 * _smooth_noise(
            rng, h + 2 * j, w + 2 * j, max(4, min(h, w) // 6)
        )
        self.drift = (0.1 + 0.15 * d, rng.uniform(8, 20), rng.uniform(0, 2 * math.pi))
        self.noise = 0.01 + 0.04 * d
        self.jitter = np.zeros(2)
        n_dis = 1 + int(round(3 * d))
        self.dis_pos = rng.uniform([0, 0], [w, h], (n_dis, 2))
        ang = rng.uniform(0, 2 * math.pi, n_dis)
        self.dis_vel = (
            np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.4, 1.2, (n_dis, 1)) * self.unit
        )
        self.dis_grey = rng.uniform(0.1, 0.9, n_dis)
        self.shape = SHAPES[rng.integers(len(SHAPES))]
        hue = rng.uniform(0, 1)
        self.colour = np.array(
            [0.5 + 0.5 * math.cos(2 * math.pi * (hue + o)) for o in (0, 1 / 3, 2 / 3)]
        )
        self.colour = 0.15 + 0.85 * self.colour
        self.size = rng.uniform(7, 10) * self.unit
        self.pos = rng.uniform([0.25 * w, 0.25 * h], [0.75 * w, 0.75 * h])
        self.angle = rng.uniform(0, 2 * math.pi)
        self.scale = 1.0
        self.phase = 0.0
        self.speed = (2.6 - 1.0 * d) * self.unit
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def _wrap(self) -> None:
        w, h, m = self.cfg.width, self.cfg.height, 1.2 * self.size
        self.pos[0] = (self.pos[0] + m) % (w + 2 * m) - m
        self.pos[1] = (self.pos[1] + m) % (h + 2 * m) - m

    def move(self, motion: str | None, t: float) -> None:
        v, fps = self.speed, self.cfg.fps
        step = {
            "slide_left": (-v, 0),
            "slide_right": (v, 0),
            "rise": (0, -v),
            "fall": (0, v),
            "diag_up_right": (v * 0.71, -v * 0.71),
            "diag_down_left": (-v * 0.71, v * 0.71),
            "diag_up_left": (-v * 0.71, -v * 0.71),
            "diag_down_right": (v * 0.71, v * 0.71),
        }
        if motion in step:
            self.pos += np.array(step[motion])
        elif motion in ("rotate_cw", "rotate_ccw"):
            self.angle += (0.3 if motion == "rotate_cw" else -0.3) * (
                1.4 - 0.6 * self.cfg.difficulty
            )
        elif motion in ("grow", "shrink"):
            self.phase = (self.phase + 0.09) % 1.0
            ramp = self.phase if motion == "grow" else 1.0 - self.phase
            self.scale = 0.6 + 0.9 * ramp
        elif motion in ("orbit_cw", "orbit_ccw"):
            a = t * 2 * math.pi / 1.5 * (1 if motion == "orbit_cw" else -1)
            self.pos += 2.2 * v * np.array([-math.sin(a), math.cos(a)]) * 2 * math.pi / (1.5 * fps)
        elif motion == "shake":
            self.pos[0] += (
                6 * self.unit * math.cos(t * 2 * math.pi / 0.5) * 2 * math.pi / (0.5 * fps) / 2
            )
        elif motion == "pulse":
            self.scale = 1.0 + 0.4 * math.sin(t * 2 * math.pi / 0.8)
        else:  # idle: slow random drift, relax size
            self.pos += self.rng.normal(0, 0.12 * self.unit * (1 + self.cfg.difficulty), 2)
            self.angle += self.rng.normal(0, 0.01)
            self.scale += 0.05 * (1.0 - self.scale)
        self._wrap()

    def render(self, t: float) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        h, w, j = cfg.height, cfg.width, self.jitter_max
        self.jitter = np.clip(self.jitter + rng.normal(0, 0.4, 2), -j, j)
        oy, ox = (np.round(self.jitter) + j).astype(int)
        amp, period, ph = self.drift
        img = self.background[oy : oy + h, ox : ox + w] * (
            1 + amp * math.sin(2 * math.pi * t / period + ph)
        )
        self.dis_pos += self.dis_vel
        for i in range(len(self.dis_pos)):
            for axis, lim in ((0, w), (1, h)):
                if not 0 <= self.dis_pos[i, axis] <= lim:
                    self.dis_vel[i, axis] *= -1
                    self.dis_pos[i, axis] = np.clip(self.dis_pos[i, axis], 0, lim)
            r = np.hypot(self.xx - self.dis_pos[i, 0], self.yy - self.dis_pos[i, 1])
            a = np.clip(2.0 * self.unit - r + 0.5, 0, 1)[..., None]
            img = img * (1 - a) + self.dis_grey[i] * a
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = self.xx - self.pos[0], self.yy - self.pos[1]
        size = self.size * self.scale
        u, v = (c * dx + s * dy) / size, (-s * dx + c * dy) / size
        alpha = np.clip(0.5 - _shape_sdf(self.shape, u, v) * size, 0, 1)[..., None]
        colour = np.where((u > 0.35)[..., None], self.colour * 0.35, self.colour)
        img = img * (1 - alpha) + colour * alpha
        img = img + rng.normal(0, self.noise, img.shape)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index])


def plan_untrimmed(
    rng: np.random.Generator, cfg: SynthConfig, labels: list[str]
) -> tuple[int, list[tuple[int, int, str]]]:
    """Frame count and action instances [(first, end_exclusive, label)] of one video."""
    fps = cfg.fps
    n = int(round(rng.uniform(cfg.min_duration, cfg.max_duration) * fps))
    inst: list[tuple[int, int, str]] = []
    f = 0 if rng.random() < 0.2 else int(rng.uniform(1, 5) * fps)
    while f < n - cfg.min_action * fps:
        length = int(round(rng.uniform(cfg.min_action, cfg.max_action) * fps))
        end = min(f + length, n)
        if end - f < cfg.min_action * fps:
            break
        inst.append((f, end, labels[rng.integers(len(labels))]))
        f = end + int(rng.uniform(1.5, 6) * fps)
    return n, inst


def write_mp4(path: Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> None:
    """Lossless H.264 (yuv420p, qp 0). libx264's lossy decisions here changed with the process's
    memory layout (same frames, same settings, different pictures now and then); lossless makes
    the decoded frames exactly the converted input, so the same seed decodes to the same frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264", rate=int(round(fps)) if float(fps).is_integer() else fps
        )
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"qp": "0", "preset": "veryfast", "g": str(int(4 * fps))}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def render_untrimmed(
    cfg: SynthConfig, subset: str, index: int, labels: list[str]
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    rng = _rng(cfg.seed, 0 if subset == "training" else 1, index)
    n, inst = plan_untrimmed(rng, cfg, labels)
    scene = Scene(rng, cfg)
    motion: list[str | None] = [None] * n
    for a, b, lab in inst:
        motion[a:b] = [lab] * (b - a)
    frames = []
    for f in range(n):
        t = f / cfg.fps
        scene.move(motion[f], t)
        frames.append(scene.render(t))
    return np.stack(frames), inst


def render_clip(cfg: SynthConfig, index: int, label: str) -> np.ndarray:
    rng = _rng(cfg.seed, 2, index)
    scene = Scene(rng, cfg)
    n = int(round(rng.uniform(1.5, 3.0) * cfg.fps))
    frames = []
    for f in range(n):
        t = f / cfg.fps
        scene.move(label, t)
        frames.append(scene.render(t))
    return np.stack(frames)


def _video_id(subset: str, index: int) -> str:
    return f"synth_{'train' if subset == 'training' else 'val'}_{index:04d}"


def _clip_id(index: int) -> str:
    return f"clip_{index:05d}"


def generate(out: Path, cfg: SynthConfig, progress=None) -> dict[str, Path]:
    """Write videos/, annotations.json, clips/ and clips.json under `out`."""
    cfg.validate()
    labels = UNTRIMMED_MOTIONS[: cfg.classes]
    clip_labels = CLIP_MOTIONS[: cfg.clip_classes]
    jobs = [("training", i) for i in range(cfg.train_videos)] + [
        ("validation", i) for i in range(cfg.val_videos)
    ]
    n_clips = cfg.clip_classes * cfg.clips_per_class
    names = [f"videos/{_video_id(subset, i)}.mp4" for subset, i in jobs]
    names += [f"clips/{_clip_id(i)}.mp4" for i in range(n_clips)]
    for name in ("videos", "clips", "annotations.json", "clips.json", *names):
        inside(out, name, "synth output")  # a symlink leading out of OUT is refused up front
    total = len(jobs) + n_clips
    videos: dict[str, VideoInfo] = {}
    done = 0
    for subset, i in jobs:
        vid = _video_id(subset, i)
        frames, inst = render_untrimmed(cfg, subset, i, labels)
        write_mp4(out / "videos" / f"{vid}.mp4", frames, cfg.fps)
        segs = [Segment(vid, lab, a / cfg.fps, b / cfg.fps) for a, b, lab in inst]
        videos[vid] = VideoInfo(subset, len(frames) / cfg.fps, segs, {"fps": cfg.fps})
        done += 1
        if progress:
            progress(done, total)
    clips: dict[str, VideoInfo] = {}
    for i in range(n_clips):
        label = clip_labels[i % cfg.clip_classes]
        cid = _clip_id(i)
        frames = render_clip(cfg, i, label)
        write_mp4(out / "clips" / f"{cid}.mp4", frames, cfg.fps)
        dur = len(frames) / cfg.fps
        subset = "validation" if (i // cfg.clip_classes) % 5 == 4 else "training"
        clips[cid] = VideoInfo(subset, dur, [Segment(cid, label, 0.0, dur)], {"fps": cfg.fps})
        done += 1
        if progress:
            progress(done, total)
    write_json(
        out / "annotations.json", "annotations", ground_truth_json(GroundTruth(videos, labels))
    )
    write_json(
        out / "clips.json", "clip annotations", ground_truth_json(GroundTruth(clips, clip_labels))
    )
    return {
        "videos": out / "videos",
        "annotations": out / "annotations.json",
        "clips": out / "clips",
        "clips_json": out / "clips.json",
    }
