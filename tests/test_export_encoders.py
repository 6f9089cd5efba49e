"""Every encoder exports with the head at small sizes: fp32 parity <= 1e-4, graphs that pass the
static TensorRT checker (export runs it), and fp16 parity recorded within its tolerance."""

from __future__ import annotations

import json

import pytest
import torch
from lofi.runtime.models import BundleModels
from lofi.trainer.checkpoint import build_encoder, build_head, save_checkpoint

from tests.conftest import tiny_config


def _checkpoint(tmp_path, backbone: str):
    torch.manual_seed(0)
    cfg = tiny_config(backbone=backbone)
    cfg.data.k = 2
    enc = build_encoder(cfg)
    with torch.no_grad():  # non-trivial BN statistics, so features are not ~0 everywhere
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
    head = build_head(cfg, enc.out_dim, 3)
    path = tmp_path / "checkpoint.pt"
    payload = {"stage": "head", "config": cfg.to_dict(), "labels": ["a", "b", "c"], "fps": 8.0}
    payload.update(input_size=[32, 32], encoder=enc.state_dict(), head=head.state_dict())
    save_checkpoint(path, payload)
    return path, enc.out_dim


@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_encoder_and_head_export_with_parity(tmp_path, backbone):
    from lofi.export.bundle_writer import export_bundle

    ckpt, dim = _checkpoint(tmp_path, backbone)
    bundle, parity = export_bundle(ckpt, tmp_path / "b")
    assert parity["ok"] and parity["encoder_max_abs_err"] <= 1e-4, parity
    assert parity["head_max_abs_err"] <= 1e-4, parity
    assert json.loads((bundle / "manifest.json").read_text())["encoder"]["feature_dim"] == dim
    BundleModels(bundle)  # the runtime accepts it


def test_fp16_parity_is_recorded(tmp_path):
    from lofi.export.bundle_writer import export_bundle

    bundle, parity = export_bundle(_checkpoint(tmp_path, "resnet18")[0], tmp_path / "b", fp16=True)
    recorded = json.loads((bundle / "parity.json").read_text())
    assert recorded == parity and recorded["precision"] == "fp16" and recorded["ok"]
    assert 0 < recorded["encoder_max_abs_err"] <= recorded["tolerance"] == 5e-2
