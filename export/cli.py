"""`lofi-export CHECKPOINT OUT` and `lofi-export --check BUNDLE`."""

from __future__ import annotations

from pathlib import Path

import click
from lofi.runtime.bounds import Bound, Number
from lofi.runtime.errors import LofiError, cli_errors, working_on
from lofi.runtime.outputs import check_output_folder, named

# GiB TensorRT may use while it builds an engine: about a MiB to a TiB
WORKSPACE = Bound(0.001, 1024)


@click.command()
@click.argument("checkpoint", type=click.Path(), required=False)
@click.argument("out", type=click.Path(file_okay=False), required=False)
@click.option("--fp16", is_flag=True, help="Export float16 models (fp32 interface).")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs a GPU and TensorRT).")
@click.option(
    "--trt-shapes",
    metavar="batch=MIN:OPT:MAX,length=MIN:OPT:MAX",
    help="Engine profiles: encoder snippets per call (batch) and pyramid-head sequence length "
    "in snippets (length). Default batch=1:16:64, length from the head window.",
)
@click.option(
    "--workspace",
    type=Number(WORKSPACE),
    default=2.0,
    show_default=True,
    help="TensorRT workspace limit in GiB.",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    help="TensorRT timing cache file, reused and updated across builds.",
)
@click.option(
    "--check",
    "check",
    type=click.Path(file_okay=False),
    help="Validate the bundle folder CHECK without running it (hashes, format, parity, "
    "engines), instead of exporting.",
)
@cli_errors
def main(checkpoint, out, fp16, trt, trt_shapes, workspace, timing_cache, check) -> None:
    """Export a lofi/head-stage CHECKPOINT to the bundle folder OUT, checked for ONNX (and
    engine) parity; a bundle that fails is left at OUT.partial and the exit status is 1."""
    if check:
        if checkpoint or out:
            raise LofiError("--check takes only the bundle folder, no CHECKPOINT or OUT")
        from lofi.export.check import check_bundle

        with working_on(f"the bundle {named(check)}"):
            for line in check_bundle(Path(check)):
                click.echo(line)
        return
    if not (checkpoint and out):
        raise LofiError("give CHECKPOINT and OUT (or --check BUNDLE)")
    if not trt and (trt_shapes or timing_cache):
        raise LofiError("--trt-shapes and --timing-cache apply only with --trt")
    out_dir, full = Path(out), Path(out).resolve()
    check_output_folder(
        "OUT",
        [full, full.parent / (full.name + ".partial")],
        [("checkpoint", checkpoint), ("timing cache", timing_cache)],
    )
    from lofi.export.bundle_writer import export_bundle
    from lofi.export.publish import stop_signals
    from lofi.export.tensorrt_build import BuildOptions
    from lofi.export.trt_shapes import Profiles

    build = BuildOptions(workspace, Path(timing_cache) if timing_cache else None)
    # SIGTERM as Ctrl-C: OUT.partial is removed, the exit status is 130, OUT never half written
    with stop_signals(), working_on(f"the checkpoint {named(checkpoint)}"):
        folder, parity = export_bundle(
            Path(checkpoint), out_dir, fp16, trt, Profiles.parse(trt_shapes), build
        )
    engines = "".join(
        f", {name} {e['max_abs_err']:.2e}" for name, e in parity.get("engines", {}).items()
    )
    click.echo(
        f"bundle written to {folder}: encoder max abs err {parity['encoder_max_abs_err']:.2e}, "
        f"head {parity['head_max_abs_err']:.2e} (tolerance {parity['tolerance']:.0e}){engines}"
    )
