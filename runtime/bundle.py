"""The bundle folder: manifest.json + ONNX models (+ TensorRT plans). Schema, writer, reader."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid

FORMAT = "lofi-tal-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to run a bundle, so that nothing has to be guessed."""

    labels: list[str]
    grid: SnippetGrid
    height: int
    width: int
    mean: list[float]
    std: list[float]
    feature_dim: int
    strides: list[int]
    window: int
    context: int
    max_reach: float
    post: PostConfig
    precision: str
    files: dict[str, str]
    engines: list[dict[str, Any]]

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "snippets": {
                "fps": self.grid.fps,
                "k": self.grid.k,
                "frame_stride": self.grid.frame_stride,
                "hop": self.grid.hop,
            },
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
            "head": {
                "file": HEAD_FILE,
                "input": "features",
                "layout": "NCL",
                "outputs": [
                    f"{kind}_{i}" for i in range(len(self.strides)) for kind in ("cls", "reg")
                ],
                "strides": self.strides,
                "window": self.window,
                "context": self.context,
                "max_reach": self.max_reach,
            },
            "postprocess": self.post.__dict__,
            "precision": self.precision,
            "files": self.files,
            "engines": self.engines,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise LofiError("manifest.json is not a LoFi-TAL bundle manifest")
        if d.get("format_version") != FORMAT_VERSION:
            raise LofiError(
                f"bundle format version {d.get('format_version')} is not supported "
                f"(this runtime reads version {FORMAT_VERSION})"
            )
        try:
            s, i, h = d["snippets"], d["input"], d["head"]
            return cls(
                labels=list(d["labels"]),
                grid=SnippetGrid(
                    float(s["fps"]), int(s["k"]), int(s["frame_stride"]), float(s["hop"])
                ),
                height=int(i["height"]),
                width=int(i["width"]),
                mean=[float(x) for x in i["mean"]],
                std=[float(x) for x in i["std"]],
                feature_dim=int(d["encoder"]["feature_dim"]),
                strides=[int(x) for x in h["strides"]],
                window=int(h["window"]),
                context=int(h["context"]),
                max_reach=float(h["max_reach"]),
                post=PostConfig.from_dict(d["postprocess"]),
                precision=str(d["precision"]),
                files=dict(d["files"]),
                engines=list(d.get("engines", [])),
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
