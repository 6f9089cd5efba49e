"""The bundle folder: manifest.json + ONNX models (+ TensorRT plans). Schema, writer, reader."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid, resize_grid

FORMAT = "lofi-tal-bundle"
FORMAT_VERSION = 2  # 2: head type and snippet protocol (the G-TAD head); 1 still reads
READ_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
HEAD_TYPES = {"pyramid": "window", "gtad": "resize"}  # head type -> its snippet protocol
GTAD_OUTPUTS = ["start", "end", "confidence", "class_probs"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pyramid_outputs(levels: int) -> list[str]:
    return [f"{kind}_{i}" for i in range(levels) for kind in ("cls", "reg")]


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to run a bundle, so that nothing has to be guessed.

    Two heads: `pyramid` (the `window` protocol: fixed hop, streamable; `strides`, `window`,
    `context`, `max_reach`) and `gtad` (the `resize` protocol: `length` snippets spread over the
    whole video, one head call per video; `length`, `max_duration`, `head_outputs`). For `resize`
    the hop depends on the video's length: `video_grid(n_frames)` gives it, and `grid.hop` is
    NaN."""

    labels: list[str]
    grid: SnippetGrid
    height: int
    width: int
    mean: list[float]
    std: list[float]
    feature_dim: int
    post: PostConfig
    precision: str
    files: dict[str, str]
    engines: list[dict[str, Any]]
    head_type: str = "pyramid"
    strides: list[int] = field(default_factory=list)
    window: int = 0
    context: int = 0
    max_reach: float = 0.0
    length: int = 0
    max_duration: int = 0

    @property
    def protocol(self) -> str:
        return HEAD_TYPES[self.head_type]

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    @property
    def head_outputs(self) -> list[str]:
        """The head's output names, in the order `BundleModels` returns them."""
        if self.head_type == "gtad":
            return list(GTAD_OUTPUTS)
        return pyramid_outputs(len(self.strides))

    def video_grid(self, n_frames: int) -> SnippetGrid:
        """The snippet grid of a video of n_frames frames (at `grid.fps`)."""
        if self.protocol == "resize":
            g = self.grid
            return resize_grid(g.fps, g.k, g.frame_stride, n_frames, self.length)
        return self.grid

    def to_json(self) -> dict[str, Any]:
        g = self.grid
        snippets: dict[str, Any] = {
            "protocol": self.protocol,
            "fps": g.fps,
            "k": g.k,
            "frame_stride": g.frame_stride,
        }
        head: dict[str, Any] = {
            "type": self.head_type,
            "file": HEAD_FILE,
            "input": "features",
            "layout": "NCL",
            "outputs": self.head_outputs,
        }
        if self.protocol == "window":
            snippets["hop"] = g.hop
            head.update(
                strides=self.strides,
                window=self.window,
                context=self.context,
                max_reach=self.max_reach,
            )
        else:
            snippets["length"] = self.length
            head.update(
                length=self.length,
                max_duration=self.max_duration,
                output_shapes={
                    "start": ["N", "T"],
                    "end": ["N", "T"],
                    "confidence": ["N", 2, "D", "T"],
                    "class_probs": ["N", "K", "T"],
                },
            )
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "snippets": snippets,
            "input": {
                "height": self.height,
                "width": self.width,
                "layout": "NKHWC",
                "dtype": "uint8",
                "channels": "rgb",
                "mean": self.mean,
                "std": self.std,
            },
            "encoder": {
                "file": ENCODER_FILE,
                "input": "frames",
                "output": "features",
                "feature_dim": self.feature_dim,
            },
            "head": head,
            "postprocess": self.post.__dict__,
            "precision": self.precision,
            "files": self.files,
            "engines": self.engines,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise LofiError("manifest.json is not a LoFi-TAL bundle manifest")
        if d.get("format_version") not in READ_VERSIONS:
            raise LofiError(
                f"bundle format version {d.get('format_version')} is not supported "
                f"(this runtime reads versions {', '.join(map(str, READ_VERSIONS))})"
            )
        try:
            s, i, h = d["snippets"], d["input"], d["head"]
            head_type = str(h.get("type", "pyramid"))  # version 1: always the pyramid head
            if head_type not in HEAD_TYPES:
                raise LofiError(f"bundle head type {head_type!r} is not supported")
            protocol = str(s.get("protocol", "window"))
            if protocol != HEAD_TYPES[head_type]:
                raise LofiError(
                    f"bundle snippet protocol {protocol!r} does not fit its {head_type} head "
                    f"(needs {HEAD_TYPES[head_type]!r})"
                )
            common = dict(
                labels=list(d["labels"]),
                height=int(i["height"]),
                width=int(i["width"]),
                mean=[float(x) for x in i["mean"]],
                std=[float(x) for x in i["std"]],
                feature_dim=int(d["encoder"]["feature_dim"]),
                post=PostConfig.from_dict(d["postprocess"]),
                precision=str(d["precision"]),
                files=dict(d["files"]),
                engines=list(d.get("engines", [])),
                head_type=head_type,
            )
            fps, k, stride = float(s["fps"]), int(s["k"]), int(s["frame_stride"])
            if head_type == "pyramid":
                return cls(
                    grid=SnippetGrid(fps, k, stride, float(s["hop"])),
                    strides=[int(x) for x in h["strides"]],
                    window=int(h["window"]),
                    context=int(h["context"]),
                    max_reach=float(h["max_reach"]),
                    **common,
                )
            length = int(h["length"])
            if int(s["length"]) != length:
                raise LofiError(
                    f"bundle snippet count {s['length']} differs from the head's length {length}"
                )
            if list(h["outputs"]) != GTAD_OUTPUTS:
                raise LofiError(f"bundle head outputs must be {', '.join(GTAD_OUTPUTS)}")
            return cls(
                grid=SnippetGrid(fps, k, stride, float("nan")),
                length=length,
                max_duration=int(h["max_duration"]),
                **common,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LofiError(f"manifest.json is missing or has a bad field: {exc}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Hash every listed file and write manifest.json last, so a bundle is complete or absent."""
    files = {name: sha256_file(folder / name) for name in manifest.files}
    data = manifest.to_json()
    data["files"] = files
    (folder / MANIFEST).write_text(json.dumps(data, indent=1))


def load_manifest(folder: str | Path, verify: bool = True) -> tuple[Path, Manifest]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise LofiError(f"not a bundle (no {MANIFEST}): {folder}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LofiError(f"{path} is not valid JSON") from None
    manifest = Manifest.from_json(data)
    for name in (ENCODER_FILE, HEAD_FILE):
        if name not in manifest.files:
            raise LofiError(f"bundle manifest does not list {name}")
    if verify:
        for name, digest in manifest.files.items():
            f = folder / name
            if not f.is_file():
                raise LofiError(f"bundle file missing: {f}")
            if sha256_file(f) != digest:
                raise LofiError(f"bundle file modified (sha256 mismatch): {f}")
    return folder, manifest
