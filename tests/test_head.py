"""The pyramid head: finite receptive field (windows with context() margin are exact), training
masks equal per-sample passes, EMA and the whole-video crop sampling of the head stage."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from lofi.trainer.head import PyramidHead


def _head(**kw) -> PyramidHead:
    torch.manual_seed(0)
    return PyramidHead(12, 3, dim=16, **kw).eval()


LEGACY = {"residual": False, "embed_layers": 1, "head_layers": 2}  # the previous head
DESIGNS = [
    {},
    {"norm": True, "levels": 3, "head_layers": 2, "blocks": 2},
    {"levels": 5, "kernel": 5, "blocks": 0, "embed_layers": 1},
    LEGACY,
]


@pytest.mark.parametrize("kw", DESIGNS)
def test_windows_with_context_margin_equal_the_whole_pass(kw):
    head = _head(**kw)
    top, ctx = max(head.strides), head.context()
    assert ctx % top == 0 and ctx >= head.radius()
    n = 8 * top + 4 * ctx
    x = torch.randn(1, 12, n)
    with torch.no_grad():
        whole = head(x)
        window = 2 * top
        for a in range(0, n, window):
            lo, hi = max(0, a - ctx), min(n, a + window + ctx)
            part = head(x[..., lo:hi])
            for (c0, r0), (c1, r1), s in zip(whole, part, head.strides):
                i0, i1 = a // s, (a + window) // s
                j0 = (a - lo) // s
                assert torch.allclose(c0[..., i0:i1], c1[..., j0 : j0 + i1 - i0], atol=1e-5)
                assert torch.allclose(r0[..., i0:i1], r1[..., j0 : j0 + i1 - i0], atol=1e-5)


@pytest.mark.parametrize("kw", DESIGNS)
def test_radius_is_tight(kw):
    # the first position of the top level (snippets [0, top)) depends on snippet top - 1 + r
    # and on nothing after it
    head = _head(**kw)
    r, top = head.radius(), max(head.strides)
    x = torch.randn(4, 12, 4 * top + 4 * r, requires_grad=True)
    cls, reg = head(x)[-1]
    (grad,) = torch.autograd.grad(cls[..., 0].sum() + reg[..., 0].sum(), x)
    reached = grad.abs().sum((0, 1)).nonzero().max().item()
    assert reached == top - 1 + r


def test_mask_equals_each_sample_on_its_own():
    head = _head()
    top = max(head.strides)
    lengths = [3 * top, 5 * top, 2 * top]
    n = max(lengths)
    x = torch.randn(len(lengths), 12, n)
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, length in enumerate(lengths):
        x[i, :, length:] = 0
        mask[i, :length] = True
    with torch.no_grad():
        batched = head(x, mask)
        for i, length in enumerate(lengths):
            alone = head(x[i : i + 1, :, :length])
            for (c0, r0), (c1, r1) in zip(batched, alone):
                k = c1.shape[-1]
                assert torch.allclose(c0[i : i + 1, :, :k], c1, atol=1e-5)
                assert torch.allclose(r0[i : i + 1, :, :k], r1, atol=1e-5)


def test_default_and_previous_receptive_fields():
    assert (_head().radius(), _head().context()) == (56, 56)
    assert (_head(**LEGACY).radius(), _head(**LEGACY).context()) == (32, 32)


def test_old_attribute_names_and_prior():
    head = _head()
    assert torch.allclose(head.cls_out.bias, torch.full((3,), -np.log(99.0)).float())
    assert head.reg_out.out_channels == 2


def test_crop_segments_shift_clip_and_truncate():
    from lofi.trainer.head_stage import crop_segments

    segs = torch.tensor([[2.0, 6.0, 0], [9.0, 13.0, 1], [18.0, 30.0, 2], [40.0, 44.0, 0]])
    out = crop_segments(segs, first=10, length=20)
    # the first and last lie outside, the second keeps 3/4 (clipped at 0), the third all
    assert out.tolist() == [[0.0, 3.0, 1.0], [8.0, 20.0, 2.0]]
    # half of the second stays inside (kept); 10 of the third's 12 (clipped at the end)
    assert crop_segments(segs, 11, 20).tolist() == [[0.0, 2.0, 1.0], [7.0, 19.0, 2.0]]
    # a quarter of the second stays inside: dropped
    assert crop_segments(segs, 12, 16).tolist() == [[6.0, 16.0, 2.0]]
    assert len(crop_segments(torch.zeros(0, 3), 0, 5)) == 0


def test_draw_crops_stay_inside_and_cover_the_fraction():
    from lofi.trainer.head_stage import draw_crops

    rng = np.random.default_rng(0)
    lengths = [1, 7, 40, 100] * 50
    for n, (first, size) in zip(lengths, draw_crops(lengths, [0.9, 1.0], rng)):
        assert first >= 0 and first + size <= n and size >= max(1, round(0.9 * n))
    assert draw_crops([50], [1.0, 1.0], rng) == [(0, 50)]


def test_weight_decay_only_on_convolution_weights():
    from lofi.trainer.head_stage import decay_groups

    head = _head()
    decay, rest = decay_groups(head, 1e-3, 0.05)
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    assert all(p.ndim == 3 for p in decay["params"])
    assert all(p.ndim == 1 for p in rest["params"])  # biases, norm gains, level scales
    assert len(decay["params"]) + len(rest["params"]) == len(list(head.parameters()))


def test_ema_ramps_up_then_follows_slowly():
    from lofi.trainer.head_stage import ModelEMA

    head = _head()
    ema = ModelEMA(head, 0.999)
    w = head.cls_out.weight
    with torch.no_grad():
        w.add_(1.0)
    ema.update(head)  # first update: decay 1/10, the average jumps most of the way
    assert torch.allclose(ema.module.cls_out.weight, w - 0.1, atol=1e-6)
    assert int(ema.counter.n) == 1 and not ema.module.cls_out.weight.requires_grad


def test_head_stage_resumes_exactly_with_the_ema(tiny_caches, random_checkpoint, tmp_path):
    # a run stopped mid-epoch and resumed gives the same EMA, raw weights and EMA counter
    from lofi.trainer.head_stage import HeadStage
    from lofi.trainer.stages import RUNNERS

    from tests.conftest import tiny_config, with_data

    cfg = with_data(tiny_config(), tiny_caches)
    cfg.head = replace(
        cfg.head, init=str(random_checkpoint), epochs=3, batch_size=1, validate_every=3
    )
    cfg.train.checkpoint_every = 1
    RUNNERS["head"](cfg, tmp_path / "straight")

    original = HeadStage.after_step
    calls = []

    def stop_after_three(self):
        original(self)
        calls.append(1)
        if len(calls) == 3:  # step 3 of 6: its checkpoint is never written
            raise KeyboardInterrupt

    HeadStage.after_step = stop_after_three
    try:
        with pytest.raises(KeyboardInterrupt):
            RUNNERS["head"](cfg, tmp_path / "killed")
    finally:
        HeadStage.after_step = original
    RUNNERS["head"](cfg, tmp_path / "killed", resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert int(a["head_ema_updates"]["n"]) == 6 == int(b["head_ema_updates"]["n"])
    for part in ("head", "head_train"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert not torch.equal(a["head"]["cls_out.weight"], a["head_train"]["cls_out.weight"])


def test_input_standardisation_is_part_of_the_head():
    # frozen per-channel statistics: buffers (exported with the weights), identity until set
    head = _head()
    x = torch.randn(2, 12, 16) * 5 + 3
    before = head(x)[0][0]
    head.set_input_stats(x.transpose(1, 2).reshape(-1, 12))
    state = head.state_dict()
    assert {"in_mean", "in_scale"} <= set(state)
    assert torch.allclose(state["in_mean"], x.mean((0, 2)), atol=1e-5)
    after = head(x)[0][0]
    assert not torch.allclose(before, after)
    other = _head()
    other.load_state_dict(state)
    assert torch.equal(other(x)[0][0], after)
