"""The memory planner (traced under FakeTensorMode) against a real step on the CPU."""

from __future__ import annotations

import pytest
from lofi.trainer.fidelity import FidelitySchedule
from lofi.trainer.planner import measure_step, parse_bytes

from tests.conftest import tiny_config


def _cfg(head: str = "pyramid"):
    cfg = tiny_config(head=head)
    cfg.lofi.batch_size = 2
    return cfg


@pytest.mark.parametrize(
    "fid, ckpt, prec, head",
    [
        ("full", "none", "fp32", "pyramid"),
        ("ST", "stages", "fp32", "pyramid"),
        ("T", "chunks:2", "bf16", "pyramid"),
        ("S", "none", "bf16", "pyramid"),
        ("T", "none", "fp32", "gtad"),  # the paper's head: outputs of another shape
    ],
)
def test_plan_agrees_with_a_real_step(fid, ckpt, prec, head):
    cfg = _cfg(head)
    f = FidelitySchedule().configs()[fid]
    plan = measure_step(cfg, (32, 32), f, ckpt, prec, fake=True)
    real = measure_step(cfg, (32, 32), f, ckpt, prec, fake=False)
    assert plan.activations > 0
    assert abs(plan.activations - real.activations) <= 0.1 * real.activations
    # saved-tensor hooks on real tensors tell storages apart by data pointer, not by the meter
    assert abs(plan.saved - real.saved) <= 0.1 * real.saved
    assert (plan.params, plan.grads, plan.optimizer) == (real.params, real.grads, real.optimizer)
    # AdamW keeps two moments per trainable parameter (plus a step count per tensor)
    assert 2 * plan.grads <= plan.optimizer <= 2 * plan.grads + 4096


def test_lofi_settings_need_less_activation_memory():
    cfg = _cfg()
    cfgs = FidelitySchedule().configs()
    full = measure_step(cfg, (64, 64), cfgs["full"]).activations
    for name in ("S", "T", "ST"):
        assert measure_step(cfg, (64, 64), cfgs[name]).activations <= 0.35 * full
    assert measure_step(cfg, (64, 64), cfgs["full"], "chunks:4").activations <= 0.5 * full
    assert measure_step(cfg, (64, 64), cfgs["full"], precision="bf16").activations <= 0.55 * full


def test_parse_bytes():
    assert parse_bytes("24GiB") == 24 * 1024**3 and parse_bytes("80GB") == 80 * 10**9
    from lofi.runtime.errors import LofiError

    with pytest.raises(LofiError, match="--memory"):
        parse_bytes("lots")


def test_plan_command_prints_the_table_and_what_fits(tmp_path):
    import json

    import yaml
    from click.testing import CliRunner
    from lofi.trainer.cli import train_cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"width": 8, "head_dim": 16}, "data": {"window": 32}}))
    out = tmp_path / "plan.json"
    args = ["plan", "--config", str(cfg), "--size", "32x32", "--json", str(out)]
    tight = CliRunner().invoke(train_cli, [*args, "--memory", "5MiB"])
    assert tight.exit_code == 0, tight.output
    rows = json.loads(out.read_text())
    assert len(rows) == 4 * 3 * 2  # fidelities x checkpointing x precision
    fits = {r["fidelity"] for r in rows if r["total"] <= 5 * 2**20}
    assert fits == {"S", "T", "ST"}  # full fidelity needs more than 5 MiB even checkpointed
    verdicts = tight.output.split("within 5.0 MiB")[1].splitlines()
    for fid in ("full", "S", "T", "ST"):
        line = next(x for x in verdicts if x.strip().startswith(f"{fid} "))
        assert ("fits with" in line) == (fid in fits), line
    s_line = next(x for x in verdicts if x.strip().startswith("S "))
    assert "checkpointing=none, precision=bf16" in s_line  # no recomputation comes first
    bad = CliRunner().invoke(train_cli, [*args, "--memory", "plenty"])
    assert bad.exit_code == 1 and "--memory" in bad.output


PARTS = ("activations", "weight_casts", "params", "grads", "optimizer")


def test_the_total_is_the_sum_of_its_parts_each_counted_once():
    from lofi.trainer.planner import GIB, Plan, format_plan

    # powers of two: a part left out of the total, or counted twice, changes the sum
    parts = {k: 2**i * GIB for i, k in enumerate(PARTS)}
    plan = Plan("full", 8, (24, 32), "none", "bf16", saved=2**10 * GIB, **parts)
    assert plan.total == 31 * GIB  # `saved` is held in the activations and casts: not added
    row = plan.as_json()
    assert row["total"] == plan.total == sum(row[k] for k in PARTS)
    # the printed table adds up too: activations, casts, and the footer's three
    text = format_plan([plan]).splitlines()
    assert text[2].split()[:4] == ["full", "8x24x32", "none", "bf16"]
    activ, casts, total = (float(x) for x in text[2].split()[-3:])
    footer = [float(w) for w in text[3].replace(",", " ").split() if w[0].isdigit()]
    assert footer == [4.0, 8.0, 16.0]
    assert (activ, casts, total) == (1.0, 2.0, 31.0) and activ + casts + sum(footer) == total


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_each_part_is_what_the_model_and_optimiser_hold(prec):
    """Parameters, gradients and AdamW's state counted from the model itself, not the meter."""
    import torch
    from lofi.trainer.checkpoint import build_encoder, build_head
    from lofi.trainer.encoder import freeze_batch_norm

    cfg = _cfg()
    plan = measure_step(cfg, (32, 32), FidelitySchedule().configs()["ST"], precision=prec)
    encoder = build_encoder(cfg, pretrained=False)
    head = build_head(cfg, encoder.out_dim, 20)
    if cfg.lofi.freeze_bn:
        freeze_batch_norm(encoder)
    model = torch.nn.ModuleList([encoder, head])
    tensors = [*model.parameters(), *model.buffers()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert plan.params == sum(t.numel() * t.element_size() for t in tensors)
    assert plan.grads == sum(p.numel() * 4 for p in trainable)  # fp32 gradients
    # two fp32 moments per trainable tensor and a one-float step count each
    assert plan.optimizer == 2 * plan.grads + 4 * len(trainable)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert plan.weight_casts == 0 if prec == "fp32" else 0 < plan.weight_casts <= 2 * weights
    assert plan.total == sum(getattr(plan, k) for k in PARTS)
    # what autograd saves is held in the activations and the casts, not on top of them
    assert 0 < plan.saved <= plan.activations + plan.weight_casts


def test_activations_do_not_hold_the_optimisers_state():
    """The optimiser's state is its own part: the same step's activations under AdamW (two
    moments), SGD with momentum (one) and plain SGD (none) are the same bytes. The shapes are
    small enough that the state outweighs the activations, so counting it in would show."""
    rows = []
    for optimizer, momentum in (("adamw", 0.0), ("sgd", 0.9), ("sgd", 0.0)):
        cfg = _cfg()
        cfg.lofi.batch_size, cfg.lofi.optimizer, cfg.lofi.momentum = 1, optimizer, momentum
        rows.append(measure_step(cfg, (8, 8), FidelitySchedule().configs()["ST"]))
    adamw, momentum, plain = rows
    assert adamw.optimizer > 2 * adamw.grads and momentum.optimizer == momentum.grads
    assert plain.optimizer == 0
    assert adamw.activations < adamw.optimizer
    assert len({r.activations for r in rows}) == 1
