"""The trainer's memory and scale options (config `train` section, fidelity schedules) at toy size:
activation checkpointing and channels_last are exact, gradient accumulation trains the same
weights, bf16/fp16 autocast really runs, multigrid keeps B*T*H*W constant, a NaN loss stops."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import load_checkpoint
from lofi.trainer.data import prepare_cache
from lofi.trainer.distributed import Dist
from lofi.trainer.encoder import SnippetEncoder, parse_checkpointing
from lofi.trainer.fidelity import SQRT2, Fidelity, FidelitySchedule
from lofi.trainer.lofi_stage import LofiStage
from lofi.trainer.memory_meter import SavedBytes
from lofi.trainer.schema import Config
from lofi.trainer.stages import RUNNERS

from tests.conftest import tiny_config

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tiny_synth: Path, tmp_path_factory) -> Path:
    """The tiny set's frame cache in a folder of its own (other modules' caches stay untouched)."""
    out = tmp_path_factory.mktemp("memory_cache")
    prepare_cache(tiny_synth / "annotations.json", tiny_synth / "videos", out, 8.0, (32, 32))
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy shapes gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads make them many times slower; restored for the other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_plots(monkeypatch):
    """curves.png takes most of a toy run's time and is not what these tests look at."""
    monkeypatch.setattr("lofi.trainer.run.plot_curves", lambda *a, **k: None)


def lofi_cfg(tiny_synth: Path, cache: Path, **lofi) -> Config:
    cfg = tiny_config(head_dropout=0.0)
    cfg.data = replace(cfg.data, annotations=str(tiny_synth / "annotations.json"), cache=str(cache))
    cfg.lofi = replace(cfg.lofi, epochs=1, batch_size=4, freeze_bn=True, schedule="full")
    cfg.lofi = replace(cfg.lofi, **lofi)
    return cfg


def metrics(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["epochs"]


def train_mode_frozen_bn(enc: nn.Module) -> nn.Module:
    enc.train()
    for m in enc.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return enc


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to float summation order, relative to the tensor's largest entry."""
    return bool((a - b).abs().max() <= rel * b.abs().max() + 1e-7)


# --- 1. activation checkpointing -------------------------------------------------------------


def _step(base: SnippetEncoder, x: torch.Tensor, probe: torch.Tensor, mode: str):
    enc = train_mode_frozen_bn(copy.deepcopy(base))
    enc.set_memory(mode)
    saved = SavedBytes(enc.parameters(), by_pointer=True)
    with saved.hooks():
        out = enc(x)
    (out * probe).sum().backward()
    grads = {n: p.grad for n, p in enc.named_parameters()}
    return out.detach(), grads, saved.total


@pytest.mark.parametrize(
    "backbone, k, snippets, width",
    # 32x32 frames; the torchvision backbones with 2 snippets of k=2
    [("tiny", 4, 4, 8), ("resnet18", 2, 2, 16), ("mobilenet_v2", 2, 2, 16)],
)
def test_activation_checkpointing_is_exact_and_saves_memory(backbone, k, snippets, width):
    torch.manual_seed(0)
    base = SnippetEncoder(backbone, k, width)
    x = torch.randn(1, snippets, k, 3, 32, 32)
    probe = torch.randn(1, snippets, base.out_dim)
    out0, grads0, saved0 = _step(base, x, probe, "none")
    assert all(g is not None and g.abs().sum() > 0 for g in grads0.values())
    for mode in ("stages", "chunks:2"):
        out, grads, saved = _step(base, x, probe, mode)
        assert torch.allclose(out, out0, rtol=0, atol=1e-6), mode
        for name, g in grads.items():
            assert g is not None, (mode, name)
            assert close(g, grads0[name]), (mode, name, (g - grads0[name]).abs().max())
        # the recomputed stages keep nothing for backward but their inputs
        assert saved < 0.5 * saved0, (mode, saved, saved0)
    # eval and no-grad forwards run the plain graph
    enc = copy.deepcopy(base).eval()
    enc.set_memory("chunks:2")
    with torch.no_grad():
        assert torch.allclose(enc(x), base.eval()(x), rtol=0, atol=1e-6)


def test_lofi_stage_applies_the_train_memory_options(tiny_synth, cache):
    cfg = lofi_cfg(tiny_synth, cache)
    cfg.train = replace(cfg.train, checkpointing="chunks:3", channels_last=True)
    enc = LofiStage(cfg, torch.device("cpu"), Dist()).model.encoder
    assert enc.checkpointing == ("chunks", 3) and enc.channels_last
    assert enc.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    cfg.train.checkpointing = "chunks"
    with pytest.raises(LofiError, match="not 'chunks'"):
        LofiStage(cfg, torch.device("cpu"), Dist())


# --- 2. parse_checkpointing ------------------------------------------------------------------


def test_parse_checkpointing():
    assert parse_checkpointing("none") == ("none", 0)
    assert parse_checkpointing("stages") == ("stages", 0)
    assert parse_checkpointing("chunks:3") == ("chunks", 3)
    for bad in ("chunks:0", "chunk:2", "foo", "chunks:", "chunks:-1", "chunks:x", ""):
        with pytest.raises(LofiError, match="train.checkpointing must be none, stages or chunks"):
            parse_checkpointing(bad)
    with pytest.raises(LofiError, match="chunks:N"):
        SnippetEncoder("tiny", 4, 8).set_memory("chunks:0")


# --- 3. gradient accumulation ----------------------------------------------------------------


def _weights(ckpt: dict) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.double()
        for part in ("encoder", "head")
        for k, v in ckpt[part].items()
        if v.is_floating_point() and "running" not in k and not k.startswith("in_")
    }


@pytest.mark.usefixtures("no_plots")
def test_gradient_accumulation_trains_the_same_weights(tiny_synth, cache, tmp_path, monkeypatch):
    import lofi.trainer.head_kinds as kinds

    micro: list[int] = []  # windows per micro-batch (the losses' calls)
    real = kinds.detection_loss

    def spy(outputs, targets, *args, **kwargs):
        micro.append(len(targets))
        return real(outputs, targets, *args, **kwargs)

    monkeypatch.setattr(kinds, "detection_loss", spy)
    # One step of 4 windows with plain SGD, so each weight moves by lr x its gradient (Adam's
    # first step is ~lr x sign(g) and would hide a wrongly scaled gradient); the encoder's
    # gradients are ~1e-5, so its large rate lifts the moves well above float32 rounding (the
    # head's frozen input statistics, `in_*`, are buffers that never train)
    cfg = lofi_cfg(
        tiny_synth, cache, optimizer="sgd", lr=100.0, head_lr=10.0, weight_decay=0.0, momentum=0.0
    )
    stage = LofiStage(cfg, torch.device("cpu"), Dist())  # the seeded initial weights
    w0 = _weights({k: m.state_dict() for k, m in stage.modules().items()})
    ref = _weights(load_checkpoint(RUNNERS["lofi"](cfg, tmp_path / "acc1")))
    delta0 = {k: ref[k] - w0[k] for k in ref}
    assert micro == [4]
    moved = [k for k, d in delta0.items() if d.abs().max() > 1e-4]
    still = [k for k in delta0 if k not in moved]
    assert len(moved) > 0.9 * len(delta0) and all(
        k in moved for k in delta0 if k.startswith("encoder.")
    ), still
    variants = [
        ({"accumulate": 2}, [2, 2]),
        ({"accumulate": 4}, [1, 1, 1, 1]),
        ({"accumulate": 2, "checkpointing": "chunks:2", "channels_last": True}, [2, 2]),
    ]
    for i, (train, sizes) in enumerate(variants):
        cfg.train = replace(cfg.train, **train)
        micro.clear()
        got = _weights(load_checkpoint(RUNNERS["lofi"](cfg, tmp_path / f"v{i}")))
        cfg.train = replace(cfg.train, accumulate=1, checkpointing="none", channels_last=False)
        assert micro == sizes, train
        for k, d in delta0.items():
            assert close(got[k] - w0[k], d, rel=1e-4), (train, k, (got[k] - w0[k] - d).abs().max())
    losses = [metrics(tmp_path / d)[0]["loss"] for d in ("acc1", "v0", "v1", "v2")]
    assert losses == pytest.approx([losses[0]] * 4, rel=1e-5)


# --- 4. precision ----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_plots")
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_runs_under_autocast(
    tiny_synth, cache, tmp_path, monkeypatch, precision, dtype
):
    import lofi.trainer.head_kinds as kinds

    seen: list[torch.dtype] = []
    real = kinds.detection_loss

    def spy(outputs, *args, **kwargs):
        seen.extend(cls.dtype for cls, _ in outputs)  # (reg goes through an fp32 Scale)
        return real(outputs, *args, **kwargs)

    monkeypatch.setattr(kinds, "detection_loss", spy)
    cfg = lofi_cfg(tiny_synth, cache)
    cfg.train.precision = precision
    ckpt = load_checkpoint(RUNNERS["lofi"](cfg, tmp_path / precision))
    (epoch,) = metrics(tmp_path / precision)
    assert all(math.isfinite(epoch[k]) for k in ("loss", "loss_cls", "loss_reg")), epoch
    assert seen and set(seen) == {dtype}  # the head's convolutions ran in low precision
    assert all(v.dtype == torch.float32 for v in ckpt["encoder"].values() if v.is_floating_point())
    # fp16 needs loss scaling (GradScaler); bf16 has fp32's range and does not
    assert ("scale" in ckpt["scaler"]) == (precision == "fp16"), ckpt["scaler"]


def test_bf16_halves_the_planned_activations():
    from lofi.trainer.planner import measure_step

    cfg = tiny_config()
    fid = Fidelity("full", 1, 1.0)
    fp32 = measure_step(cfg, (32, 32), fid, precision="fp32", fake=True)
    bf16 = measure_step(cfg, (32, 32), fid, precision="bf16", fake=True)
    assert bf16.activations < 0.6 * fp32.activations, (bf16.activations, fp32.activations)


def test_unknown_precision_is_refused(tiny_synth, cache, tmp_path):
    cfg = lofi_cfg(tiny_synth, cache)
    cfg.train.precision = "fp8"
    with pytest.raises(LofiError, match="train.precision must be fp32, bf16 or fp16, not 'fp8'"):
        RUNNERS["lofi"](cfg, tmp_path / "run")


# --- 5. channels_last ------------------------------------------------------------------------


def test_channels_last_is_exact():
    torch.manual_seed(0)
    base = SnippetEncoder("tiny", 4, 8)
    x = torch.randn(2, 3, 4, 3, 32, 32)
    cl = copy.deepcopy(base)
    cl.set_memory(channels_last=True)
    convs = [m for m in cl.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not base.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    inputs = []
    cl.backbone.stem[0].register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        assert torch.allclose(cl.eval()(x), base.eval()(x), rtol=1e-5, atol=1e-6)
    assert inputs[0].is_contiguous(memory_format=torch.channels_last)
    # and in training (frozen BN), gradients too
    probe = torch.randn(2, 3, base.out_dim)
    grads = []
    for enc in (base, cl):
        train_mode_frozen_bn(enc)
        enc.zero_grad()
        (enc(x) * probe).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for name, g in grads[1].items():
        assert close(g, grads[0][name]), name


# --- 6. multigrid ----------------------------------------------------------------------------


def test_multigrid_schedules_keep_the_batch_volume():
    long = FidelitySchedule("multigrid_long")
    fids = [long.at(e, 0) for e in range(4)]
    assert [f.r_t for f in fids] == [4, 2, 2, 1]
    assert [f.batch_scale for f in fids] == [8, 4, 2, 1]
    assert [f.r_s for f in fids] == pytest.approx([SQRT2, SQRT2, 1.0, 1.0])
    assert long.at(4, 0) == fids[0] and long.at(1, 99) == fids[1]  # per epoch, not per step
    short = FidelitySchedule("multigrid_short")
    steps = [short.at(0, s) for s in range(6)]
    assert [f.batch_scale for f in steps] == [4, 2, 1] * 2
    assert [f.r_s for f in steps] == pytest.approx([2.0, SQRT2, 1.0] * 2)
    assert {f.r_t for f in steps} == {1} and short.at(7, 1) == steps[1]  # per step
    for f in fids + steps[:3]:
        assert abs(f.batch_scale / f.r_t / f.r_s**2 - 1) < 1e-9, f
    assert len({f.name for f in fids + steps[:3]}) == 6  # "mg_full" is one shape


@pytest.mark.usefixtures("no_plots")
def test_multigrid_long_trains_with_larger_coarser_batches(
    tiny_synth, cache, tmp_path, monkeypatch
):
    import lofi.trainer.detector as detector

    shapes: list[tuple[int, int, int, int]] = []
    real = detector.encode

    def spy(encoder, frames, index, boxes, size, cfg, dev):
        shapes.append((index.shape[0], index.shape[1], *size))
        return real(encoder, frames, index, boxes, size, cfg, dev)

    monkeypatch.setattr(detector, "encode", spy)
    cfg = lofi_cfg(tiny_synth, cache, schedule="multigrid_long", batch_size=1, epochs=2)
    RUNNERS["lofi"](cfg, tmp_path / "mg")
    epochs = metrics(tmp_path / "mg")
    assert [e["fidelity"] for e in epochs] == ["mg_T4S1.4", "mg_T2S1.4"]
    assert all(math.isfinite(e["loss"]) for e in epochs)
    # epoch 1: 8 windows of 32/4 snippets at 23^2; epoch 2: 4 of 16 - one step each (the
    # pool's 2 windows at batch 1 make 2 full-fidelity steps)
    assert shapes == [(8, 8, 23, 23), (4, 16, 23, 23)]
    full = 1 * 32 * 32 * 32
    assert all(abs(b * t * h * w / full - 1) < 0.05 for b, t, h, w in shapes)


# --- 7. non-finite loss ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_plots")
def test_nan_loss_stops_the_run(tiny_synth, cache, tmp_path, monkeypatch):
    import lofi.trainer.head_kinds as kinds

    real = kinds.detection_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        nan = float("nan")
        return loss * nan, {**parts, "loss_cls": parts["loss_cls"] * nan}

    monkeypatch.setattr(kinds, "detection_loss", nan_loss)
    cfg = lofi_cfg(tiny_synth, cache)
    with pytest.raises(LofiError, match=r"non-finite loss at epoch 1 step 1") as err:
        RUNNERS["lofi"](cfg, tmp_path / "nan")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("lofi: ") and "(global step 1)" in message
    assert "loss_cls=nan" in message and "loss_reg=" in message
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()  # no NaN weights were saved


def test_a_nan_loss_with_finite_parts_stops_too(tiny_synth, cache, tmp_path, monkeypatch):
    import lofi.trainer.head_kinds as kinds

    real = kinds.detection_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(kinds, "detection_loss", nan_loss)
    with pytest.raises(LofiError, match=r"non-finite loss at epoch 1 step 1.*loss=nan"):
        RUNNERS["lofi"](lofi_cfg(tiny_synth, cache), tmp_path / "nan")


def test_stage_checkpointing_with_training_batch_norm_is_exact():
    # recomputation must not update running statistics twice; chunks would change the batch
    # statistics, so they are refused while batch norm trains
    torch.manual_seed(0)
    plain = SnippetEncoder("tiny", 2, 8).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_memory("stages")
    x = torch.randn(2, 3, 2, 3, 32, 32)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (k, v), w in zip(plain.state_dict().items(), ckpt.state_dict().values()):
        assert torch.equal(v, w), k
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    chunked = copy.deepcopy(plain)
    chunked.set_memory("chunks:2")
    with pytest.raises(LofiError, match="frozen batch norm"):
        chunked(x)
