"""`lofi-export --check BUNDLE`: validate a bundle without running it."""

from __future__ import annotations

from pathlib import Path

from lofi.export.trt_check import check_tensorrt_ready
from lofi.runtime.backends import gpu_compute_capability, tensorrt_version
from lofi.runtime.bundle import FORMAT_VERSION, GRAPHS, engine_problem, read_parity
from lofi.runtime.models import BundleModels


def check_bundle(bundle: Path) -> list[str]:
    """Raise a one-line LofiError for a bundle the runtime would refuse (format version, the
    manifest's digest, file names and hashes, external data, parity, graphs that disagree with
    the manifest: the runtime's own load on the CPU) or whose graphs TensorRT 10.x would not
    parse; else report lines, one per engine saying whether this machine can load it."""
    models = BundleModels(bundle)
    folder, m = models.folder, models.manifest
    for name in GRAPHS:
        check_tensorrt_ready(folder / name)
    parity = read_parity(folder, m)
    lines = [
        f"{folder}: ok (format version {FORMAT_VERSION}, {len(m.files)} files hashed, {m.precision} parity "
        f"encoder {parity['encoder_max_abs_err']:.2e} head {parity['head_max_abs_err']:.2e} "
        f"<= {parity['tolerance']:.0e}, graphs TensorRT-ready)"
    ]
    trt, cc = tensorrt_version(), gpu_compute_capability()
    for e in m.engines:
        problem = engine_problem(e, trt, cc)
        built = f"TensorRT {e.get('tensorrt_version')}, compute capability {e.get('compute_capability')}"
        verdict = f"cannot load here: {problem}" if problem else "loads here"
        lines.append(f"{e['file']}: built with {built}; {verdict}")
    if not m.engines:
        lines.append("no TensorRT engines (export with --trt to add them)")
    return lines
