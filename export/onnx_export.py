"""torch -> ONNX for the encoder (uint8 frames in, normalisation inside) and the heads (the
pyramid head: dynamic length; G-TAD: fixed length T, dynamic batch)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn
from lofi.export.trt_check import check_tensorrt_ready
from lofi.runtime.errors import LofiError
from lofi.trainer.encoder import ExportableEncoder, SnippetEncoder
from lofi.trainer.gtad import ExportableGTAD, GTADHead
from lofi.trainer.head import ExportableHead, PyramidHead

OPSET = 18


class Half(nn.Module):
    """Runs a module in float16 with float32 outputs (the fp16 bundle's interface stays fp32)."""

    def __init__(self, module: nn.Module, cast_input: bool):
        super().__init__()
        self.module = module.half()
        self.cast_input = cast_input

    def forward(self, x: torch.Tensor):
        out = self.module(x.half() if self.cast_input else x)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


class CastFirstEncoder(nn.Module):
    """ExportableEncoder's computation with the uint8 frames cast before anything else touches
    them: onnx-tensorrt takes UINT8 only at network inputs/outputs and in Cast. `half` runs the
    encoder in float16 (0..255 are exact in it) with float32 features out."""

    def __init__(self, enc: ExportableEncoder, half: bool = False):
        super().__init__()
        self.enc = enc.half() if half else enc
        self.dtype = torch.float16 if half else torch.float32

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        e = self.enc
        x = frames.to(self.dtype).permute(0, 1, 4, 2, 3) * e.scale - e.shift
        return e.encoder(x[None]).squeeze(0).float()


def _export(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: list[str],
    dynamic: dict,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes={"x" if "x" in _arg_names(model) else _arg_names(model)[0]: dynamic},
            dynamo=True,
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise LofiError(f"ONNX export of {path.name} failed")
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    check_tensorrt_ready(path)


def _arg_names(model: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(model.forward).parameters]


def export_encoder(
    encoder: SnippetEncoder,
    mean: list[float],
    std: list[float],
    k: int,
    height: int,
    width: int,
    path: Path,
    fp16: bool = False,
) -> None:
    base = ExportableEncoder(copy.deepcopy(encoder), mean, std)
    model = CastFirstEncoder(base, half=fp16).eval()
    example = torch.randint(0, 256, (2, k, height, width, 3), dtype=torch.uint8)
    snippets = torch.export.Dim("snippets", min=1, max=4096)
    _export(model, example, path, "frames", ["features"], {0: snippets})


def export_head(head: PyramidHead, in_dim: int, path: Path, fp16: bool = False) -> list[str]:
    model: nn.Module = ExportableHead(copy.deepcopy(head)).eval()
    if fp16:
        model = Half(model, cast_input=True).eval()
    top = max(head.strides)
    names = [f"{kind}_{i}" for i in range(len(head.strides)) for kind in ("cls", "reg")]
    example = torch.randn(1, in_dim, 4 * top)
    blocks = torch.export.Dim("blocks", min=1, max=8192)
    _export(model, example, path, "features", names, {2: top * blocks})
    return names


def export_gtad_head(head: GTADHead, in_dim: int, path: Path, fp16: bool = False) -> list[str]:
    """ExportableGTAD (probabilities) with input (N, in_dim, T): T is fixed (the proposal map
    and SGAlign's sampling grid are built for it), the batch is dynamic."""
    model: nn.Module = ExportableGTAD(copy.deepcopy(head)).eval()
    if fp16:
        model = Half(model, cast_input=True).eval()
    names = list(ExportableGTAD.output_names)
    example = torch.randn(2, in_dim, head.length)
    batch = torch.export.Dim("batch", min=1, max=1024)
    _export(model, example, path, "features", names, {0: batch})
    return names
