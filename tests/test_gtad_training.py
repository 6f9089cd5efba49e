"""The G-TAD head trains in the lofi and head stages (resize protocol) and is evaluated with
the runtime's decoding, NMS and mAP."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from lofi.runtime.errors import LofiError
from lofi.trainer.stages import RUNNERS

from tests.conftest import tiny_config, with_data

SMALL = {"dim": 16, "groups": 4, "width_group": 4, "k": 2, "samples": 4, "map_dim": 16}


def gtad_config(data):
    cfg = with_data(tiny_config(head="gtad"), data)
    cfg.model.gtad = replace(cfg.model.gtad, **SMALL, hidden_2d=8)
    cfg.data = replace(cfg.data, mode="resize", window=16)
    cfg.postprocess.score_threshold = 0.0
    return cfg


def test_gtad_trains_end_to_end_and_as_a_head(tiny_caches, tmp_path):
    cfg = gtad_config(tiny_caches)
    cfg.lofi = replace(cfg.lofi, epochs=3, batch_size=2, schedule="long_cycle")
    lofi = RUNNERS["lofi"](cfg, tmp_path / "lofi")
    epochs = json.loads((tmp_path / "lofi" / "metrics.json").read_text())["epochs"]
    assert [e["fidelity"] for e in epochs] == ["S", "T", "ST"]  # T feeds 4 snippets, resized
    assert {"loss_tem", "loss_pem_reg", "loss_pem_cls", "loss_cls"} <= set(epochs[0])
    cfg.head = replace(cfg.head, init=str(lofi), epochs=8, lr=3e-3)
    RUNNERS["head"](cfg, tmp_path / "head")
    m = json.loads((tmp_path / "head" / "metrics.json").read_text())
    losses = [e["loss"] for e in m["epochs"]]
    assert losses[-1] < losses[0]
    report = m["validation"]
    assert len(report["mAP"]) == 10 and all(0 <= v <= 1 for v in report["mAP"])


def test_gtad_needs_the_resize_protocol(tiny_caches, tmp_path):
    cfg = gtad_config(tiny_caches)
    cfg.data.mode = "window"
    with pytest.raises(LofiError, match="data.mode=resize"):
        RUNNERS["lofi"](cfg, tmp_path / "x")
