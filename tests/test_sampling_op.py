"""The pure-torch LoFi reference op against independent formulations."""

import pytest
import torch
import torch.nn.functional as F
from lofi.cpp_ext import lofi_sample_reference as lofi_sample


def frames(t=6, h=9, w=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def test_full_box_resize_matches_interpolate():
    fr = frames()
    idx = torch.tensor([[[0, 2], [5, 5]]])
    out = lofi_sample(fr, idx, torch.tensor([[0.0, 0.0, 13.0, 9.0]]), (5, 7), [0, 0, 0], [1, 1, 1])
    ref = F.interpolate(
        fr[[0, 2, 5, 5]].permute(0, 3, 1, 2).float(),
        size=(5, 7),
        mode="bilinear",
        align_corners=False,
    )
    assert out.shape == (1, 2, 2, 3, 5, 7)
    assert torch.allclose(out.reshape(4, 3, 5, 7) * 255, ref, atol=1e-3)


def test_identity_and_normalisation():
    fr = frames()
    out = lofi_sample(
        fr,
        torch.tensor([[[1]]]),
        torch.tensor([[0.0, 0.0, 13.0, 9.0]]),
        (9, 13),
        [0.5, 0.4, 0.3],
        [0.2, 0.25, 0.5],
    )
    x = fr[1].permute(2, 0, 1).float() / 255
    ref = (x - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.5])[
        :, None, None
    ]
    assert torch.allclose(out[0, 0, 0], ref, atol=1e-4)


def test_integer_crop_is_a_slice():
    fr = frames()
    box = torch.tensor([[2.0, 3.0, 10.0, 7.0]])  # x0, y0, x1, y1
    out = lofi_sample(fr, torch.tensor([[[4]]]), box, (4, 8), [0, 0, 0], [1, 1, 1])
    assert torch.allclose(out[0, 0, 0] * 255, fr[4, 3:7, 2:10].permute(2, 0, 1).float(), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    out = lofi_sample(
        frames(),
        torch.zeros(2, 3, 2, dtype=torch.long),
        torch.tensor([[0.0, 0, 13, 9]] * 2),
        (4, 4),
        [0.5] * 3,
        [0.5] * 3,
        dtype,
    )
    assert out.dtype == dtype and out.shape == (2, 3, 2, 3, 4, 4)


def test_bad_input():
    with pytest.raises(ValueError):
        lofi_sample(
            frames().float(),
            torch.zeros(1, 1, 1, dtype=torch.long),
            torch.zeros(1, 4),
            (2, 2),
            [0] * 3,
            [1] * 3,
        )
