"""Local pretrained weights (torchvision and TSM-release layouts) and the MobileNetV2 TSM encoder."""

from __future__ import annotations

import copy
import os
import pickle
import re

import pytest
import torch
import torchvision
from lofi.runtime.errors import LofiError
from lofi.trainer.encoder import temporal_shift
from lofi.trainer.mobilenet_tsm import MobileNetV2TSM, TemporalShift
from lofi.trainer.pretrained import load_backbone_weights

FRAMES = 4
# torchvision nested leaf -> TSM archs/mobilenet_v2.py flat index (with / without expansion)
_FLAT_EXPAND = {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7}
_FLAT_NO_EXPAND = {"0.0": 0, "0.1": 1, "1": 3, "2": 4}


def _source(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision state dict with every float tensor random (BN stats too), so loads show."""
    torch.manual_seed(seed)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


def _tsm_resnet(state: dict) -> dict:
    """As in the TSM release: TSN wrapper, TemporalShift(`.net`) around each block's conv1."""
    out = {}
    for k, v in state.items():
        if not k.startswith("fc."):
            out["module.base_model." + re.sub(r"^(layer\d\.\d+\.conv1)\.", r"\1.net.", k)] = v
    out["module.new_fc.weight"], out["module.new_fc.bias"] = torch.randn(400, 512), torch.zeros(400)
    return {"epoch": 100, "arch": "resnet18", "state_dict": out}


def _tsm_mobilenet(state: dict) -> dict:
    """As in the TSM release: flat per-block Sequentials, `conv.0.net` on residual blocks."""
    blocks = torchvision.models.mobilenet_v2(weights=None).features
    out = {}
    for k, v in state.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(\w+)$", k)
        if k.startswith("classifier."):
            continue
        if m:
            block = blocks[int(m[1])]
            flat = (_FLAT_EXPAND if len(block.conv) == 4 else _FLAT_NO_EXPAND)[m[2]]
            net = ".net" if flat == 0 and block.use_res_connect else ""
            k = f"features.{m[1]}.conv.{flat}{net}.{m[3]}"
        out["module.base_model." + k] = v
    out["module.new_fc.weight"], out["module.new_fc.bias"] = (
        torch.randn(400, 1280),
        torch.zeros(400),
    )
    return {"state_dict": out}


def _assert_loaded(net: torch.nn.Module, source: dict) -> None:
    got = net.state_dict()
    for k, v in source.items():
        if not k.startswith(("fc.", "classifier.")):
            assert torch.equal(got[k], v), k


@pytest.mark.parametrize(
    ("arch", "convert"), [("resnet18", _tsm_resnet), ("mobilenet_v2", _tsm_mobilenet)]
)
def test_tsm_release_layout_loads(tmp_path, arch, convert):
    source = _source(arch, seed=1)
    file = convert(source)
    assert any(".net." in k for k in file["state_dict"])
    path = tmp_path / f"{arch}_tsm.pth"
    torch.save(file, path)
    torch.manual_seed(2)
    net = getattr(torchvision.models, arch)(weights=None)
    report = load_backbone_weights(net, path, arch)
    _assert_loaded(net, source)
    assert report.loaded == sum(not k.startswith(("fc.", "classifier.")) for k in source)
    assert report.ignored == ["new_fc.bias", "new_fc.weight"]
    assert not (report.missing or report.unexpected or report.mismatched)
    assert "loaded" in report.summary()


def test_torchvision_state_dict_loads(tmp_path):
    source = _source("resnet18", seed=3)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(source, plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, wrapped)
    for path in (plain, wrapped):
        net = torchvision.models.resnet18(weights=None)
        report = load_backbone_weights(net, path, "resnet18")
        _assert_loaded(net, source)
        assert report.ignored == ["fc.bias", "fc.weight"]


def test_shifted_model_keys_load_back(tmp_path):
    """A MobileNetV2TSM state dict (`conv.0.net.0.weight`) is TSM's nested `.net` style."""
    torch.manual_seed(4)
    tsm = MobileNetV2TSM(FRAMES)
    assert "features.3.conv.0.net.0.weight" in tsm.state_dict()
    path = tmp_path / "mine.pth"
    torch.save(tsm.state_dict(), path)
    net = torchvision.models.mobilenet_v2(weights=None)
    load_backbone_weights(net, path, "mobilenet_v2")
    assert torch.equal(net.features[3].conv[0][0].weight, tsm.features[3].conv[0].net[0].weight)


def test_mobilenet_tsm_takes_weights(tmp_path):
    source = _source("mobilenet_v2", seed=5)
    path = tmp_path / "mnv2_tsm.pth"
    torch.save(_tsm_mobilenet(source), path)
    tsm = MobileNetV2TSM(FRAMES, weights=str(path))
    shifted = tsm.features[3].conv[0]
    assert isinstance(shifted, TemporalShift)
    assert torch.equal(shifted.net[0].weight, source["features.3.conv.0.0.weight"])
    assert torch.equal(tsm.features[18][1].running_var, source["features.18.1.running_var"])


def test_incomplete_or_misshapen_file_is_refused_whole(tmp_path):
    source = _source("resnet18", seed=6)
    missing = dict(source)
    del missing["layer2.0.bn1.running_mean"]
    misshapen = dict(source, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    extra = _source("resnet34", seed=6)  # resnet18's tensors all fit, plus more
    for name, state, why in [
        ("missing.pth", missing, "1 missing"),
        ("shape.pth", misshapen, "shape mismatch"),
        ("r34.pth", extra, "unexpected"),
    ]:
        path = tmp_path / name
        torch.save({"state_dict": _tsm_resnet(state)["state_dict"]}, path)
        torch.manual_seed(7)
        net = torchvision.models.resnet18(weights=None)
        before = copy.deepcopy(net.state_dict())
        with pytest.raises(LofiError, match=re.escape(str(path))) as err:
            load_backbone_weights(net, path, "resnet18")
        assert why in str(err.value) and "does not fit resnet18" in str(err.value)
        assert "\n" not in str(err.value)
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_not_a_tensor_mapping_is_refused(tmp_path):
    net = torchvision.models.resnet18(weights=None)
    for name, obj in [
        ("ints.pth", {"state_dict": {"conv1.weight": 1}}),
        ("list.pth", [torch.zeros(1)]),
    ]:
        torch.save(obj, tmp_path / name)
        with pytest.raises(LofiError, match="not a mapping"):
            load_backbone_weights(net, tmp_path / name, "resnet18")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(LofiError, match="cannot read pretrained weights"):
        load_backbone_weights(net, tmp_path / "junk.pth", "resnet18")
    with pytest.raises(LofiError, match="not found"):
        load_backbone_weights(net, tmp_path / "absent.pth", "resnet18")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_running_pickle_is_refused_not_run(tmp_path):
    # the payload is live: a plain unpickle does create its marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    marker = tmp_path / "pwned"
    net = torchvision.models.resnet18(weights=None)
    evil = {"state_dict": {"conv1.weight": _Payload(marker)}}
    torch.save(evil, tmp_path / "evil.pth")
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        with open(tmp_path / f"evil{protocol}.pkl", "wb") as f:
            pickle.dump(evil, f, protocol=protocol)
    for name in ("evil.pth", "evil2.pkl", f"evil{pickle.HIGHEST_PROTOCOL}.pkl"):
        path = tmp_path / name
        with pytest.raises(LofiError, match=re.escape(str(path)) + ".*refused") as err:
            load_backbone_weights(net, path, "resnet18")
        assert "\n" not in str(err.value)
        assert not marker.exists()


def _snippets(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(2 * FRAMES, 3, 32, 32)  # 2 snippets x 4 frames


def _calibrated(model: MobileNetV2TSM) -> MobileNetV2TSM:
    """BN running stats from one batch: torchvision's init with default stats shrinks the output
    to ~1e-10, where every allclose would pass vacuously."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(_snippets(seed=100))
    return model.eval()


def test_mobilenet_tsm_forward_and_stages():
    torch.manual_seed(8)
    model = _calibrated(MobileNetV2TSM(FRAMES))
    x = _snippets()
    with torch.no_grad():
        y = model(x)
        h = x
        for stage in model.stages():
            h = stage(h)
    assert model.out_dim == 1280 and y.shape == (8, 1280)
    assert 5 <= len(model.stages()) <= 6
    assert y.abs().mean() > 0.01
    assert torch.allclose(h.mean(dim=(2, 3)), y)


def test_shift_only_on_residual_branches():
    model = MobileNetV2TSM(FRAMES)
    residual = [i for i, b in enumerate(model.features) if getattr(b, "use_res_connect", False)]
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    for i, block in enumerate(model.features):
        shifts = [m for m in block.modules() if isinstance(m, TemporalShift)]
        assert len(shifts) == (i in residual), i
        if shifts:
            assert block.conv[0] is shifts[0] and shifts[0].fold_div == 8

    # residual branch sees the shifted input, the identity path the unshifted one
    block = model.features[5].eval()
    x = torch.randn(2 * FRAMES, 32, 8, 8)
    branch = torch.nn.Sequential(block.conv[0].net, *block.conv[1:])
    with torch.no_grad():
        assert torch.allclose(block(x), x + branch(temporal_shift(x, FRAMES)), atol=1e-5)
        assert not torch.allclose(block(x), x + branch(x), atol=1e-3)
        assert not torch.allclose(
            block(x), temporal_shift(x, FRAMES) + branch(temporal_shift(x, FRAMES)), atol=1e-3
        )


def test_shift_mixes_frames():
    torch.manual_seed(9)
    shifted = _calibrated(MobileNetV2TSM(FRAMES))
    plain = copy.deepcopy(shifted)
    for block in plain.features:
        if isinstance(getattr(block, "conv", [None])[0], TemporalShift):
            block.conv[0] = block.conv[0].net
    x = _snippets()
    x2 = x.clone()
    x2[1] += 1.0  # change frame 1 of snippet 0 only
    with torch.no_grad():
        ys, ys2, yp, yp2 = shifted(x), shifted(x2), plain(x), plain(x2)
    assert not torch.allclose(ys, yp)
    # frame 0 sees frame 1 only through the shift; snippet 1 never sees snippet 0
    assert not torch.allclose(ys[0], ys2[0])
    assert torch.equal(yp[0], yp2[0])
    assert torch.allclose(ys[FRAMES:], ys2[FRAMES:])
