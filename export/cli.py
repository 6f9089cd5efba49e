"""`lofi-export CHECKPOINT OUT`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from lofi.runtime.errors import cli_errors


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--fp16", is_flag=True, help="Export float16 models (fp32 interface).")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs a GPU and TensorRT).")
@cli_errors
def main(checkpoint, out, fp16, trt) -> None:
    """Export a lofi/head-stage CHECKPOINT to the bundle folder OUT and check ONNX parity."""
    from lofi.export.bundle_writer import export_bundle

    folder, parity = export_bundle(Path(checkpoint), Path(out), fp16, trt)
    click.echo(
        f"bundle written to {folder}: encoder max abs err {parity['encoder_max_abs_err']:.2e}, "
        f"head {parity['head_max_abs_err']:.2e} (tolerance {parity['tolerance']:.0e})"
    )
    if not parity["ok"]:
        click.echo(
            "error: ONNX Runtime outputs differ from PyTorch beyond tolerance (see parity.json)",
            err=True,
        )
        sys.exit(1)
