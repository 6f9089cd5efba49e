"""The bundle folder: manifest.json + ONNX models (+ TensorRT plans). Schema, writer, reader."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid, resize_grid

FORMAT = "lofi-tal-bundle"
# 2: head type and snippet protocol (the G-TAD head); 3: the manifest's own digest, parity.json
# hashed and required to say ok. Older bundles cannot show they were checked: re-export them.
FORMAT_VERSION = 3
READ_VERSIONS = (3,)
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
PARITY_FILE = "parity.json"
DIGEST_KEY = "manifest_sha256"
HEAD_TYPES = {"pyramid": "window", "gtad": "resize"}  # head type -> its snippet protocol
GTAD_OUTPUTS = ["start", "end", "confidence", "class_probs"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(data: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field: an edited manifest
    no longer matches the digest it records (a check against edits and corruption, not a
    signature)."""
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def pyramid_outputs(levels: int) -> list[str]:
    return [f"{kind}_{i}" for i in range(levels) for kind in ("cls", "reg")]


def _finite(x: int | float) -> bool:
    """Finite as a float: an int too large for one (which json reads happily) is not."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _number(d: dict, path: str, minimum: float, integer: bool = False, above: bool = True) -> None:
    """One manifest number: present, a JSON number (not a bool), finite, and > (or >=) minimum."""
    node: Any = d
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return  # absence is reported by from_json's KeyError message
        node = node[key]
    ok_type = (int,) if integer else (int, float)
    if isinstance(node, bool) or not isinstance(node, ok_type):
        kind = "an integer" if integer else "a number"
        raise LofiError(f"manifest.json: field {path} must be {kind}, got {repr(node)[:40]}")
    if not _finite(node) or not (node > minimum if above else node >= minimum):
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        raise LofiError(
            f"manifest.json: field {path} must be finite and {bound}, got {repr(node)[:40]}"
        )


def check_manifest_values(d: Any) -> None:
    """Refuse in one line what `Manifest.from_json` would otherwise turn into a crash or a
    silently wrong run: a manifest that is not an object, sections that are not objects,
    non-finite, mistyped or out-of-range numbers."""
    if not isinstance(d, dict):
        raise LofiError("manifest.json is not a LoFi-TAL bundle manifest (not a JSON object)")
    for key in ("snippets", "input", "head", "encoder", "postprocess", "files"):
        if key in d and not isinstance(d[key], dict):
            raise LofiError(f"manifest.json: field {key} must be an object")
    for key in ("labels", "engines"):
        if key in d and not isinstance(d[key], list):
            raise LofiError(f"manifest.json: field {key} must be a list")
    if "labels" in d and not (d["labels"] and all(isinstance(x, str) for x in d["labels"])):
        raise LofiError("manifest.json: field labels must be a non-empty list of names")
    for key in ("mean", "std"):
        values = d.get("input", {}).get(key)
        if values is not None and (
            not isinstance(values, list)
            or len(values) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
            or not all(_finite(x) for x in values)
            or (key == "std" and not all(x > 0 for x in values))
        ):
            raise LofiError(
                f"manifest.json: field input.{key} must be 3 finite numbers"
                + (" > 0" if key == "std" else "")
            )
    _number(d, "snippets.fps", 0)
    _number(d, "snippets.k", 0, integer=True)
    _number(d, "snippets.frame_stride", 0, integer=True)
    _number(d, "snippets.hop", 0)
    _number(d, "snippets.length", 0, integer=True)
    _number(d, "input.height", 0, integer=True)
    _number(d, "input.width", 0, integer=True)
    _number(d, "encoder.feature_dim", 0, integer=True)
    _number(d, "head.window", 0, integer=True)
    _number(d, "head.context", 0, integer=True, above=False)
    _number(d, "head.max_reach", 0, above=False)
    _number(d, "head.length", 0, integer=True)
    _number(d, "head.max_duration", 0, integer=True)
    strides = d.get("head", {}).get("strides")
    if strides is not None and not (
        isinstance(strides, list)
        and strides
        and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in strides)
    ):
        raise LofiError(
            "manifest.json: field head.strides must be a non-empty list of integers > 0"
        )
    for key in ("score_threshold", "iou_threshold", "sigma", "min_score"):
        _number(d, f"postprocess.{key}", 0, above=False)
    _number(d, "postprocess.max_segments", 0, integer=True)
    nms = d.get("postprocess", {}).get("nms", "soft")
    if nms not in ("soft", "hard"):
        raise LofiError(
            f"manifest.json: field postprocess.nms must be 'soft' or 'hard', got {nms!r}"
        )


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
        check_manifest_values(d)
        if d.get("format") != FORMAT:
            raise LofiError("manifest.json is not a LoFi-TAL bundle manifest")
        version = d.get("format_version")
        if isinstance(version, int) and version < min(READ_VERSIONS):
            raise LofiError(
                f"manifest.json: bundle format version {version} predates checked bundles "
                f"(manifest digest, recorded parity); re-export it with lofi-export"
            )
        if version not in READ_VERSIONS:
            raise LofiError(
                f"manifest.json: bundle format version {version} is not supported "
                f"(this runtime reads version {', '.join(map(str, READ_VERSIONS))})"
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
    """Hash every listed file, then the manifest itself; written last, so a bundle is complete
    or has no manifest."""
    data = manifest.to_json()
    data["files"] = {name: sha256_file(folder / name) for name in manifest.files}
    data[DIGEST_KEY] = manifest_digest(data)
    (folder / MANIFEST).write_text(json.dumps(data, indent=1))


def manifest_digest_of(folder: Path) -> str:
    """The digest a bundle's manifest records (after `load_manifest` verified it)."""
    return str(json.loads((folder / MANIFEST).read_text()).get(DIGEST_KEY, ""))


def engine_problem(engine: dict[str, Any], tensorrt: str | None, capability: str | None) -> str:
    """Why this machine cannot load a bundle's engine ("" if it can): an engine is tied to the
    TensorRT version and the GPU compute capability it was built with."""
    if tensorrt is None:
        return "TensorRT is not installed"
    if capability is None:
        return "no NVIDIA GPU (or no cuda-python)"
    built, cc = engine.get("tensorrt_version"), engine.get("compute_capability")
    if built != tensorrt:
        return f"built with TensorRT {built}, this machine has {tensorrt}"
    if cc != capability:
        return f"built for compute capability {cc}, this GPU is {capability}"
    return ""


def _check_parity(folder: Path) -> dict[str, Any]:
    path = folder / PARITY_FILE
    try:
        parity = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LofiError(f"{path} is not valid JSON") from None
    if not isinstance(parity, dict) or parity.get("ok") is not True:
        raise LofiError(f"{path}: field 'ok' is not true: the bundle failed its parity check")
    for name, e in parity.get("engines", {}).items():
        if e.get("ok") is not True:
            raise LofiError(f"{path}: engines.{name}.ok is not true: the engine failed parity")
    return parity


def load_manifest(folder: str | Path) -> tuple[Path, Manifest]:
    """Read and verify a bundle: format version, the manifest's own digest, every listed file's
    sha256, and a parity record that says ok. Anything else is refused in one line."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise LofiError(f"not a bundle (no {MANIFEST}): {folder}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LofiError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise LofiError(f"{path} is not a LoFi-TAL bundle manifest")
    manifest = Manifest.from_json(data)
    if data.get(DIGEST_KEY) != manifest_digest(data):
        raise LofiError(f"{path}: field {DIGEST_KEY} does not match the manifest (edited?)")
    needed = [ENCODER_FILE, HEAD_FILE, PARITY_FILE] + [str(e.get("file")) for e in manifest.engines]
    for name in needed:
        if name not in manifest.files:
            raise LofiError(f"{path}: field files does not list {name}")
    for name in manifest.files:
        if Path(name).name != name:
            raise LofiError(f"{path}: field files lists {name!r}, not a file name in the bundle")
    for name, digest in manifest.files.items():
        f = folder / name
        if not f.is_file():
            raise LofiError(f"bundle file missing: {f}")
        if sha256_file(f) != digest:
            raise LofiError(f"bundle file modified (sha256 mismatch): {f}")
    _check_parity(folder)
    return folder, manifest
