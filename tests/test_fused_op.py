"""The fused LoFi op (C++ CPU, CUDA) against the torch reference."""

import subprocess
import sys

import pytest
import torch
from lofi.cpp_ext import fused_op, lofi_sample_reference

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def op():
    fn = fused_op()
    assert fn is not None, "the C++ extension did not build"
    return fn


def case(t, h, w, b, length, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)
    index = torch.randint(0, t, (b, length, k), generator=g)
    return frames, index


def compare(op, frames, index, boxes, size, dtype, device):
    frames, index, boxes = frames.to(device), index.to(device), boxes.to(device)
    got = op(frames, index, boxes, size[0], size[1], MEAN, STD, dtype)
    ref = lofi_sample_reference(frames, index, boxes, size, MEAN, STD, dtype)
    assert got.shape == ref.shape and got.dtype == dtype
    assert (got.float() - ref.float()).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
# widths 40, 30, 29 take the CUDA kernel's 16-, 8- and 4-byte and scalar stores
@pytest.mark.parametrize("size", [(7, 9), (31, 29), (64, 40), (12, 30), (1, 1)])
def test_matches_reference(op, device, dtype, size):
    frames, index = case(11, 33, 47, 3, 5, 2)
    boxes = torch.tensor(
        [[0.0, 0.0, 47.0, 33.0], [2.5, 1.25, 40.75, 30.5], [-3.0, -2.0, 52.0, 40.0]]
    )
    compare(op, frames, index, boxes, size, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_cases(op, device):
    # one-frame video, repeated indices, boxes on and past the borders, odd sizes
    frames, _ = case(1, 5, 3, 1, 1, 1)
    index = torch.zeros(2, 3, 4, dtype=torch.long)
    boxes = torch.tensor([[0.0, 0.0, 3.0, 5.0], [2.9, 4.9, 3.0, 5.0]])
    compare(op, frames, index, boxes, (9, 7), torch.float32, device)
    # non-contiguous frames and index
    frames, index = case(8, 20, 30, 2, 3, 2)
    wide = torch.cat([frames, frames], dim=2)[:, :, ::2]
    assert not wide.is_contiguous()
    idx = index.transpose(1, 2)
    compare(
        op, wide, idx, torch.tensor([[0.0, 0.0, 30.0, 20.0]] * 2), (13, 17), torch.float32, device
    )


@pytest.mark.parametrize("device", DEVICES)
def test_more_output_frames_than_one_grid_axis(op, device):
    # 70,000 output frames: more than CUDA's 65,535 blocks along the frame axis
    frames, index = case(3, 4, 4, 1, 70_000, 1)
    compare(op, frames, index, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (2, 2), torch.float32, device)


def test_bad_input_raises(op):
    frames, index = case(4, 8, 8, 1, 1, 1)
    with pytest.raises(RuntimeError, match="uint8"):
        op(frames.float(), index, torch.zeros(1, 4), 4, 4, MEAN, STD, torch.float32)
    with pytest.raises(RuntimeError, match="out of range"):
        op(frames, index + 10, torch.tensor([[0.0, 0, 8, 8]]), 4, 4, MEAN, STD, torch.float32)


def test_opcheck(op):
    frames, index = case(6, 12, 10, 2, 3, 2)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 12.0], [1.0, 2.0, 9.0, 11.0]])
    torch.library.opcheck(op, (frames, index, boxes, 5, 6, MEAN, STD, torch.float32))


def test_fake_implementation_and_torch_compile(op):
    frames, index = case(6, 12, 10, 1, 2, 2)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 12.0]])
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = op(
            mode.from_tensor(frames),
            mode.from_tensor(index),
            mode.from_tensor(boxes),
            6,
            5,
            MEAN,
            STD,
            torch.float16,
        )
    assert fake.shape == (1, 2, 2, 3, 6, 5) and fake.dtype == torch.float16

    def f(fr):
        return op(fr, index, boxes, 6, 5, MEAN, STD, torch.float32) * 2

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    assert torch.equal(compiled(frames), f(frames))


def test_cuda_source_compiles():
    """CI has nvcc but no GPU: the CUDA implementation must still build (in its own process)."""
    from lofi.cpp_ext.build import cuda_home

    if torch.version.cuda is None or cuda_home() is None:
        pytest.skip("needs a CUDA build of torch and nvcc")
    code = "from lofi.cpp_ext.build import build; build(with_cuda=True)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_uses_current_stream(op):
    frames, index = case(5, 16, 16, 1, 2, 2)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = op(frames.cuda(), index.cuda(), boxes.cuda(), 8, 8, MEAN, STD, torch.float32)
    s.synchronize()
    ref = lofi_sample_reference(frames, index, boxes, (8, 8), MEAN, STD)
    assert (out.cpu() - ref).abs().max() <= 1e-5
