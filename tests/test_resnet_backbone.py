"""The torchvision ResNet backbone: local pretrained weights, export parity."""

import json

import onnx
import pytest
import torch
import torchvision
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import build_encoder, build_head, save_checkpoint

from tests.conftest import tiny_config


def _save(state: dict, path):
    torch.save(state, path)
    return str(path)


def test_pretrained_weights_load_whole_or_not_at_all(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    wrapped = {f"module.{k}": v for k, v in ref.items()}  # as saved from DataParallel
    path = _save({"state_dict": wrapped}, tmp_path / "r18.pth")
    enc = build_encoder(tiny_config(backbone="resnet18", weights=path))
    assert torch.equal(enc.backbone.net.conv1.weight, ref["conv1.weight"])
    assert torch.equal(enc.backbone.net.layer4[1].conv1.conv.weight, ref["layer4.1.conv1.weight"])

    other = _save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(LofiError, match="does not fit resnet18"):
        build_encoder(tiny_config(backbone="resnet18", weights=other))
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(LofiError, match="cannot read pretrained weights"):
        build_encoder(tiny_config(backbone="resnet18", weights=str(tmp_path / "junk.pth")))


def test_resnet18_bundle_matches_pytorch(tmp_path):
    from lofi.export.bundle_writer import export_bundle

    torch.manual_seed(0)
    weights = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    cfg = tiny_config(backbone="resnet18", weights=weights)
    cfg.data.k = 2
    enc = build_encoder(cfg)
    head = build_head(cfg, enc.out_dim, 3)
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(
        ckpt,
        {
            "stage": "head",
            "config": cfg.to_dict(),
            "labels": ["a", "b", "c"],
            "fps": 8.0,
            "input_size": [32, 32],
            "encoder": enc.state_dict(),
            "head": head.state_dict(),
        },
    )
    (tmp_path / "r18.pth").unlink()  # the checkpoint carries the weights; export must not need it
    bundle, parity = export_bundle(ckpt, tmp_path / "bundle")
    assert parity["ok"] and parity["encoder_max_abs_err"] <= 1e-4, parity
    assert json.loads((bundle / "manifest.json").read_text())["encoder"]["feature_dim"] == 512
    onnx.checker.check_model(str(bundle / "encoder.onnx"))
