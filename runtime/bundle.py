"""The bundle folder: manifest.json + ONNX models (+ TensorRT plans). Schema, writer, reader."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lofi.runtime.documents import parse_json, read_json
from lofi.runtime.errors import LofiError, shown
from lofi.runtime.onnx_file import ExternalData, external_data
from lofi.runtime.paths import file_name, inside
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
GRAPHS = (ENCODER_FILE, HEAD_FILE)
MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_GRAPH_BYTES = 2 * 1024**3  # protobuf's own limit; bigger weights go to external data
SHA256 = re.compile(r"[0-9a-f]{64}")


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


def _check_labels(labels: list) -> None:
    """The class names events carry: the head's class index i is labels[i], so a missing, empty
    or repeated name would silently mislabel or merge classes."""
    if not labels:
        raise LofiError("manifest.json: field labels must be a non-empty list of names")
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise LofiError(
                f"manifest.json: field labels[{i}] must be a non-empty string, got {shown(label)}"
            )
        if label in seen:
            raise LofiError(f"manifest.json: field labels[{i}] {shown(label)} is given twice")
        seen.add(label)


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
    if "labels" in d:
        _check_labels(d["labels"])
    for name, digest in d.get("files", {}).items():
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            raise LofiError(
                f"manifest.json: field files.{shown(name)} must be a sha256 in hex, "
                f"got {shown(digest)}"
            )
    for i, engine in enumerate(d.get("engines", [])):
        if not (isinstance(engine, dict) and isinstance(engine.get("file"), str)):
            raise LofiError(f"manifest.json: field engines[{i}] must be an object with a file")
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
    data = read_json(Path(folder) / MANIFEST, "bundle manifest", MAX_MANIFEST_BYTES)
    return str(data.get(DIGEST_KEY, "")) if isinstance(data, dict) else ""


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


def bundle_path(folder: Path, name: str) -> Path:
    """A file the manifest lists: one file name that resolves (symlinks followed) inside the
    bundle folder, or one line."""
    what = f"{folder / MANIFEST}: field files entry"
    return inside(folder, file_name(name, what), what)


def _regular(path: Path) -> None:
    if not path.exists():
        raise LofiError(f"bundle file missing: {path}")
    if not path.is_file():
        raise LofiError(f"bundle file {path} is not a regular file")


def read_verified(folder: Path, manifest: Manifest, name: str, limit: int | None = None) -> bytes:
    """A listed file's bytes, read once and checked against the manifest's sha256: what a caller
    hands to ONNX Runtime or TensorRT is exactly what was hashed (no check-then-reopen race)."""
    if name not in manifest.files:
        raise LofiError(f"{folder / MANIFEST}: field files does not list {name}")
    path = bundle_path(folder, name)
    _regular(path)
    if limit is not None and path.stat().st_size > limit:
        raise LofiError(f"bundle file {path} is larger than {limit} bytes")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.files[name]:
        raise LofiError(f"bundle file modified (sha256 mismatch): {path}")
    return data


def external_refs(folder: Path, manifest: Manifest, graph: str, data: bytes) -> list[ExternalData]:
    """The external-data references of a graph's (verified) bytes: each location must be a file
    the manifest lists (so it is hashed) and stay inside the bundle, or one line naming it."""
    refs = external_data(data, str(folder / graph))
    for ref in refs:
        what = f"{folder / graph}: external data of tensor {shown(ref.tensor)}"
        inside(folder, ref.location, what)
        if ref.location not in manifest.files:
            raise LofiError(
                f"{what} is in {shown(ref.location)}, a file the manifest does not list "
                "(unhashed): re-export the bundle"
            )
    return refs


def graph_files(folder: Path, manifest: Manifest, graph: str) -> tuple[bytes, dict[str, bytes]]:
    """A graph's bytes and its external-data files' bytes by location, each read once and
    verified against the manifest: ONNX Runtime gets these bytes and opens no file itself."""
    data = read_verified(folder, manifest, graph, MAX_GRAPH_BYTES)
    external: dict[str, bytes] = {}
    for ref in external_refs(folder, manifest, graph, data):
        if ref.location not in external:
            external[ref.location] = read_verified(folder, manifest, ref.location)
        end = ref.offset + (ref.length or 0)
        if end > len(external[ref.location]):
            raise LofiError(
                f"{folder / graph}: external data of tensor {shown(ref.tensor)} ends at byte "
                f"{end}, beyond the {len(external[ref.location])} bytes of {ref.location}"
            )
    return data, external


def read_parity(folder: Path, manifest: Manifest) -> dict[str, Any]:
    """The verified parity record, which must say ok (and ok for every engine)."""
    path = folder / PARITY_FILE
    try:
        text = read_verified(folder, manifest, PARITY_FILE).decode("utf-8")
    except UnicodeDecodeError:
        raise LofiError(f"{path} is not UTF-8 text") from None
    parity = parse_json(text, str(path))
    if not isinstance(parity, dict) or parity.get("ok") is not True:
        raise LofiError(f"{path}: field 'ok' is not true: the bundle failed its parity check")
    engines = parity.get("engines", {})
    if not isinstance(engines, dict):
        raise LofiError(f"{path}: field engines must be an object")
    for name, e in engines.items():
        if not isinstance(e, dict) or e.get("ok") is not True:
            raise LofiError(f"{path}: engines.{name}.ok is not true: the engine failed parity")
    return parity


def load_manifest(folder: str | Path) -> tuple[Path, Manifest]:
    """Read and verify a bundle: format version, the manifest's own digest, every listed file's
    name (inside the bundle) and sha256, the graphs' external data (listed, inside), no listed
    file that nothing uses, and a parity record that says ok. Anything else is one line."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise LofiError(f"not a bundle (no {MANIFEST}): {folder}")
    data = read_json(path, "bundle manifest", MAX_MANIFEST_BYTES)
    if not isinstance(data, dict):
        raise LofiError(f"{path} is not a LoFi-TAL bundle manifest")
    manifest = Manifest.from_json(data)
    if data.get(DIGEST_KEY) != manifest_digest(data):
        raise LofiError(f"{path}: field {DIGEST_KEY} does not match the manifest (edited?)")
    needed = [ENCODER_FILE, HEAD_FILE, PARITY_FILE] + [str(e["file"]) for e in manifest.engines]
    for name in needed:
        if name not in manifest.files:
            raise LofiError(f"{path}: field files does not list {name}")
    for name in manifest.files:
        bundle_path(folder, name)
    used = set(needed)
    for name in manifest.files:
        if name in GRAPHS:
            graph = read_verified(folder, manifest, name, MAX_GRAPH_BYTES)
            used.update(r.location for r in external_refs(folder, manifest, name, graph))
        else:
            f = bundle_path(folder, name)
            _regular(f)
            if sha256_file(f) != manifest.files[name]:
                raise LofiError(f"bundle file modified (sha256 mismatch): {f}")
    for name in manifest.files:
        if name not in used:
            raise LofiError(f"{path}: field files lists {name}, which no graph or engine uses")
    read_parity(folder, manifest)
    return folder, manifest
