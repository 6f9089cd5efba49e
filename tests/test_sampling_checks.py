"""Input checks of the sampling op: one-line ValueErrors, the same from the fused op and the
reference, raised before any kernel touches memory (lofi.cpp_ext.checks)."""

import pytest
import torch
from lofi.cpp_ext import lofi_sample, lofi_sample_reference
from lofi.cpp_ext.ops import has_kernel

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
NAN, INF = float("nan"), float("inf")


def frames(t=4, h=8, w=8):
    return torch.randint(
        0, 256, (t, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def good():
    return dict(
        frames=frames(),
        index=torch.tensor([[[0, 3], [1, 2]]]),
        boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
        size=(4, 4),
        mean=MEAN,
        std=STD,
        dtype=torch.float32,
    )


BAD = {
    "float frames": (dict(frames=frames().float()), "uint8"),
    "no frames": (dict(frames=frames(t=0)), "frames are empty"),
    "zero height": (dict(frames=frames(h=0)), "frames are empty"),
    "zero width": (dict(frames=frames(w=0)), "frames are empty"),
    "int32 index": (dict(index=torch.zeros(1, 2, 2, dtype=torch.int32)), "int64"),
    "index past the end": (
        dict(index=torch.tensor([[[0, 4], [1, 2]]])),
        "index 4 out of range \\[0, 4\\)",
    ),
    "negative index": (dict(index=torch.tensor([[[0, -1], [1, 2]]])), "index -1 out of range"),
    "boxes per clip": (dict(boxes=torch.zeros(2, 4)), "boxes must be \\(B, 4\\)"),
    "nan box": (dict(boxes=torch.tensor([[NAN, 0.0, 8.0, 8.0]])), "finite"),
    "inf box": (dict(boxes=torch.tensor([[0.0, 0.0, INF, 8.0]])), "finite"),
    "empty box": (dict(boxes=torch.tensor([[3.0, 0.0, 3.0, 8.0]])), "x1 > x0"),
    "flipped box": (dict(boxes=torch.tensor([[0.0, 6.0, 8.0, 2.0]])), "y1 > y0"),
    "zero size": (dict(size=(0, 4)), "size"),
    "3 stds": (dict(std=[1.0, 1.0]), "3 values"),
    "zero std": (dict(std=[1.0, 0.0, 1.0]), "non-zero"),
    "float64 output": (dict(dtype=torch.float64), "dtype"),
    # the CUDA kernel's int limits, refused on every device (no allocation happens first)
    "output frame too big": (dict(size=(2**16, 2**16)), "output frame .* exceeds"),
    "frame too wide": (
        dict(frames=torch.zeros(1, 1, 1, 3, dtype=torch.uint8).expand(2, 1, 2**30, 3)),
        "3 x frame width .* exceeds",
    ),
    "index on another device": (
        dict(index=torch.zeros(1, 2, 2, dtype=torch.long, device="meta")),
        "index is on meta",
    ),
    "boxes on another device": (dict(boxes=torch.zeros(1, 4, device="meta")), "boxes is on meta"),
}


def call(fn, device: str, **change):
    kw = good() | change
    fr = kw.pop("frames")
    # an expanded (stride-0) tensor crosses to the device unexpanded: nothing large is allocated
    fr = fr[:1, :1, :1].to(device).expand(fr.shape) if 0 in fr.stride() else fr.to(device)
    return fn(fr, kw.pop("index"), kw.pop("boxes"), **kw)


@pytest.mark.parametrize(
    "fn", [lofi_sample, lofi_sample_reference], ids=["lofi_sample", "reference"]
)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_bad_input_is_one_line(fn, device, bad):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    change, message = BAD[bad]
    with pytest.raises(ValueError, match=message) as info:
        call(fn, device, **change)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_good_input_passes_from_host_or_device(device):
    """index and boxes may sit on the CPU or on the frames' device."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ref = call(lofi_sample_reference, "cpu")
    for fn in (lofi_sample, lofi_sample_reference):
        on_host = call(fn, device)
        on_device = call(
            fn, device, index=good()["index"].to(device), boxes=good()["boxes"].to(device)
        )
        assert torch.allclose(on_host.cpu(), ref, atol=1e-5) and torch.equal(on_host, on_device)


def test_empty_batch_is_fine():
    """No clips is not an error: an empty output, nothing read."""
    out = call(
        lofi_sample, "cpu", index=torch.zeros(0, 2, 2, dtype=torch.long), boxes=torch.zeros(0, 4)
    )
    assert out.shape == (0, 2, 2, 3, 4, 4)


def test_the_cpu_kernel_is_built():
    assert has_kernel("cpu")
