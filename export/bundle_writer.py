"""Checkpoint -> bundle folder: ONNX files, parity.json, optional engines, manifest.json last.

The bundle is written to OUT.partial and moved to OUT only when every parity check passed and
the runtime loads it (its manifest checks and the graphs' agreement with the manifest), so a
bundle at OUT has always been checked; a failed one stays at OUT.partial for inspection, an
interrupted one is removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lofi.export.onnx_export import export_encoder, export_gtad_head, export_head
from lofi.export.parity import check_parity
from lofi.export.publish import publish
from lofi.export.tensorrt_build import BuildOptions
from lofi.export.trt_shapes import (
    Profiles,
    encoder_shapes,
    gtad_head_shapes,
    pyramid_head_shapes,
)
from lofi.runtime.bundle import (
    ENCODER_FILE,
    GTAD_OUTPUTS,
    HEAD_FILE,
    MANIFEST,
    PARITY_FILE,
    Manifest,
    write_manifest,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.onnx_file import external_data
from lofi.runtime.snippets import SnippetGrid
from lofi.trainer.checkpoint import checkpoint_config, load_checkpoint, models_from_checkpoint
from lofi.trainer.gtad import GTADHead
from lofi.trainer.schema import Config


def export_bundle(
    checkpoint: Path,
    out: Path,
    fp16: bool = False,
    trt: bool = False,
    profiles: Profiles | None = None,
    build: BuildOptions | None = None,
) -> tuple[Path, dict]:
    """Write the bundle and return it with its parity report; a parity failure raises a
    LofiError naming OUT.partial.

    The pyramid head needs the `window` protocol (the streaming runtime); the G-TAD head is a
    whole-video head under the `resize` protocol (the runtime's whole-video path)."""
    engines_with = None
    if trt:  # before any work: without TensorRT or a GPU, one line and nothing written
        from lofi.export.tensorrt_build import require_tensorrt

        engines_with = require_tensorrt()
    ckpt = load_checkpoint(checkpoint)
    encoder, head = models_from_checkpoint(ckpt, checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    mode = cfg.data.mode
    if isinstance(head, GTADHead):
        if mode != "resize":
            raise LofiError("a G-TAD head needs a model trained with data.mode=resize")
    elif mode != "window":
        raise LofiError("the streaming runtime needs a model trained with data.mode=window")
    h, w = _input_size(ckpt)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise LofiError(f"{out} exists and is not a bundle; refusing to overwrite it")
    final, out = out, out.with_name(out.name + ".partial")  # a failed export leaves no half bundle
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        parity = _write(
            ckpt, cfg, encoder, head, out, h, w, fp16, profiles or Profiles(), build, engines_with
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if not parity["ok"]:
        raise LofiError(
            f"parity failed (encoder max abs err {parity['encoder_max_abs_err']:.2e}, head "
            f"{parity['head_max_abs_err']:.2e}, tolerance {parity['tolerance']:.0e}"
            f"{_engine_summary(parity)}): not published; see {out / PARITY_FILE}"
        )
    _runtime_accepts(out)
    publish(out, final)
    return final, parity


def _runtime_accepts(folder: Path) -> None:
    """Load the bundle as `lofi-stream` would (manifest values, digests, file names, external
    data, parity record, graphs against the manifest): what the runtime would refuse is never
    published."""
    from lofi.runtime.models import BundleModels

    try:
        BundleModels(folder)
    except LofiError as exc:
        raise LofiError(f"the runtime refuses the exported bundle: {exc}; not published") from None


def _engine_summary(parity: dict) -> str:
    bad = [
        f"{n} {e['max_abs_err']:.2e}" for n, e in parity.get("engines", {}).items() if not e["ok"]
    ]
    return f"; engines over tolerance: {', '.join(bad)}" if bad else ""


def _write(
    ckpt: dict,
    cfg: Config,
    encoder,
    head,
    out: Path,
    h: int,
    w: int,
    fp16: bool,
    profiles: Profiles,
    build: BuildOptions | None,
    engines_with: tuple | None,
) -> dict:
    d = cfg.data
    precision = "fp16" if fp16 else "fp32"
    dim = encoder.out_dim
    export_encoder(encoder, d.mean, d.std, d.k, h, w, out / ENCODER_FILE, fp16)
    if isinstance(head, GTADHead):
        names = export_gtad_head(head, dim, out / HEAD_FILE, fp16)
        if names != GTAD_OUTPUTS:
            raise LofiError(f"G-TAD head outputs {names} are not the bundle's {GTAD_OUTPUTS}")
        head_fields = _gtad_fields(head)
        head_shapes = gtad_head_shapes(profiles, dim, head.length)
    else:
        export_head(head, dim, out / HEAD_FILE, fp16)
        head_fields = _pyramid_fields(cfg, head)
        span = head_fields["window"] + 2 * head_fields["context"]
        head_shapes = pyramid_head_shapes(profiles, dim, max(head.strides), span)
    parity = check_parity(out, encoder, head, d.mean, d.std, d.k, h, w, precision)
    engines = []
    files = [ENCODER_FILE, HEAD_FILE, PARITY_FILE]
    if engines_with is not None and parity["ok"]:
        from lofi.export.engine_parity import engine_parity
        from lofi.export.tensorrt_build import build_engine

        trt, cc = engines_with
        opts = build or BuildOptions()
        parts = [
            ("encoder", ENCODER_FILE, "frames", encoder_shapes(profiles, d.k, h, w)),
            ("head", HEAD_FILE, "features", head_shapes),
        ]
        parity["engines"] = {}
        for part, onnx_file, input_name, shapes in parts:
            plan = out / f"{part}.plan"
            built = build_engine(trt, out / onnx_file, plan, input_name, shapes, precision, opts)
            engine = {"part": part, "compute_capability": cc, **built}
            parity["engines"][plan.name] = engine_parity(out, engine, onnx_file)
            engines.append(engine)
            files.append(plan.name)
        parity["ok"] = all(e["ok"] for e in parity["engines"].values())
    (out / PARITY_FILE).write_text(json.dumps(parity, indent=1))
    for graph in (ENCODER_FILE, HEAD_FILE):  # tensors stored beside a graph are hashed too
        refs = external_data((out / graph).read_bytes(), str(out / graph))
        files += sorted({r.location for r in refs} - set(files))
    hop = float("nan") if isinstance(head, GTADHead) else float(d.hop)
    manifest = Manifest(
        labels=list(ckpt["labels"]),
        grid=SnippetGrid(float(ckpt["fps"]), d.k, d.frame_stride, hop),
        height=h,
        width=w,
        mean=list(d.mean),
        std=list(d.std),
        feature_dim=encoder.out_dim,
        post=cfg.postprocess.runtime(),
        precision=precision,
        files={f: "" for f in files},
        engines=engines,
        **head_fields,
    )
    write_manifest(out, manifest)
    return parity


def _pyramid_fields(cfg: Config, head) -> dict:
    window = cfg.model.head_window
    top = max(head.strides)
    if window % top:
        raise LofiError(f"model.head_window must be a multiple of the largest stride {top}")
    return {
        "head_type": "pyramid",
        "strides": list(head.strides),
        "window": window,
        "context": head.context(),
        "max_reach": float(cfg.model.max_reach),
    }


def _gtad_fields(head: GTADHead) -> dict:
    return {"head_type": "gtad", "length": head.length, "max_duration": head.max_duration}


def _input_size(ckpt: dict) -> tuple[int, int]:
    size = ckpt.get("input_size")
    if not size:
        raise LofiError("checkpoint has no input_size (not a lofi or head stage checkpoint)")
    return int(size[0]), int(size[1])
