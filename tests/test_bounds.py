"""Every number a command reads has physical bounds (runtime/bounds.py): an option's value is
refused in one `error:` line naming the option and the range, never a traceback, a hang or a
tensor that cannot be allocated. The family is defended by type: every numeric option of every
command uses the shared `Number`/`Pair` types, which the first test checks by walking them all."""

from __future__ import annotations

import math

import click
import pytest
from click.testing import CliRunner
from lofi.export.cli import main as export_cli
from lofi.export.demo import main as demo_cli
from lofi.runtime.bounds import (
    Number,
    Pair,
)
from lofi.runtime.cli import eval_cli, stream_cli
from lofi.runtime.errors import LofiError
from lofi.trainer.cli import data_cli, train_cli

# the arguments each command needs so that only the option under test can be wrong; the
# option's type refuses the value while click parses, before any work
COMMANDS = {
    "lofi-stream": (stream_cli, ["v.mp4", "--bundle", "b"]),
    "lofi-eval": (eval_cli, ["--ground-truth", "g.json", "--predictions", "p.json"]),
    "lofi-data synth": (data_cli, ["synth", "out"]),
    "lofi-data prepare": (data_cli, ["prepare", "a.json", "videos", "out"]),
    "lofi-data convert-thumos": (data_cli, ["convert-thumos", "ann", "out.json"]),
    "lofi-train pretrain": (train_cli, ["pretrain", "--run-dir", "run"]),
    "lofi-train lofi": (train_cli, ["lofi", "--run-dir", "run"]),
    "lofi-train head": (train_cli, ["head", "--run-dir", "run"]),
    "lofi-train plan": (train_cli, ["plan"]),
    "lofi-export": (export_cli, ["ckpt.pt", "out"]),
    "lofi-demo": (demo_cli, []),
}
# options that hold numbers in text another module parses, bounded there (tested there)
PARSED_ELSEWHERE = {"--tiou", "--memory", "--trt-shapes"}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Commands that got past their options would write here, never into the repository."""
    monkeypatch.chdir(tmp_path)


def command_of(name: str) -> click.Command:
    cmd, args = COMMANDS[name]
    if isinstance(cmd, click.Group):
        return cmd.commands[args[0]]
    return cmd


def options():
    for name in COMMANDS:
        for param in command_of(name).params:
            if isinstance(param, click.Option):
                yield name, param


def test_every_numeric_option_has_bounds():
    raw = (click.types.IntParamType, click.types.FloatParamType)
    loose = [
        f"{name} {param.opts[0]}"
        for name, param in options()
        if isinstance(param.type, raw) and not param.is_flag
    ]
    assert loose == [], f"numeric options without physical bounds: {loose}"
    bounded = {(n, p.opts[0]) for n, p in options() if isinstance(p.type, (Number, Pair))}
    # the walk sees the options the issue names (a walk that saw nothing would pass above)
    for expected in [
        ("lofi-stream", "--min-score"),
        ("lofi-stream", "--timeout"),
        ("lofi-stream", "--open-timeout"),
        ("lofi-stream", "--batch"),
        ("lofi-stream", "--parallel"),
        ("lofi-stream", "--threads"),
        ("lofi-stream", "--workers"),
        ("lofi-stream", "--reconnect"),
        ("lofi-data prepare", "--fps"),
        ("lofi-data prepare", "--size"),
        ("lofi-data prepare", "--quality"),
        ("lofi-data prepare", "--workers"),
        ("lofi-data synth", "--train-videos"),
        ("lofi-data synth", "--duration"),
        ("lofi-data synth", "--size"),
        ("lofi-train plan", "--size"),
        ("lofi-export", "--workspace"),
        ("lofi-demo", "--seed"),
    ]:
        assert expected in bounded, expected


def test_text_options_hold_no_unbounded_number():
    # a str option whose name says it is a number would escape the walk above
    numeric_words = ("size", "fps", "duration", "timeout", "count", "seed", "memory", "shape")
    unchecked = [
        f"{name} {p.opts[0]}"
        for name, p in options()
        if isinstance(p.type, click.types.StringParamType)
        and any(w in p.opts[0] for w in numeric_words)
        and p.opts[0] not in PARSED_ELSEWHERE
    ]
    assert unchecked == []


HOSTILE = ["9" * 5000, "1e300", "-1e300", "1e-300", "nan", "inf", "-1", "\x1b[31m", "", "0x10"]


def bad_values(t: click.ParamType) -> list[str]:
    if isinstance(t, Pair):
        b = t.bound
        return [f"{v}{t.sep}{v}" for v in HOSTILE if not b.holds(b.parse(v) or math.nan)] + [
            f"1{t.sep}",
            f"1{t.sep}1{t.sep}1",
            "9" * 5000,
        ]
    b = t.bound
    return [v for v in HOSTILE if not b.holds(b.parse(v) or math.nan)] + [
        str(b.low - 1),
        str(b.high + 1),
        str(b.high * 2),
    ]


CASES = [
    (name, p.opts[0], value)
    for name, p in options()
    if isinstance(p.type, (Number, Pair)) and name != "lofi-demo"  # lofi-demo: no required args
    for value in bad_values(p.type)
]


@pytest.mark.parametrize("name, option, value", CASES, ids=lambda x: str(x)[:20])
def test_out_of_bounds_option_is_one_line(name, option, value):
    cmd, args = COMMANDS[name]
    result = CliRunner().invoke(cmd, [*args, option, value])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {option} = "), result.stderr
    assert "expected" in lines[0] and len(lines[0]) < 300 and "\x1b" not in lines[0]


def test_lofi_demo_seed_is_bounded():
    result = CliRunner().invoke(demo_cli, ["--seed", "-1"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: --seed = '-1': expected an integer >= 0 and <= 4294967295"
    )


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("lofi-stream", "--timeout", "0.1"),
        ("lofi-stream", "--timeout", "86400"),
        ("lofi-stream", "--min-score", "1"),
        ("lofi-stream", "--batch", "0"),
        ("lofi-data prepare", "--size", "16384x1"),
        ("lofi-data prepare", "--fps", "1000"),
        ("lofi-data prepare", "--quality", "100"),
        ("lofi-data synth", "--duration", "0.001:604800"),
    ],
)
def test_values_at_the_bounds_are_taken(name, option, value):
    # the option parses (the command then fails on its made-up files, exit 1, not 2)
    cmd, args = COMMANDS[name]
    result = CliRunner().invoke(cmd, [*args, option, value])
    assert result.exit_code != 2, result.stderr


def test_set_twice_is_refused_on_the_command_line():
    result = CliRunner().invoke(
        train_cli, ["head", "--run-dir", "r", "--set", "lofi.epochs=1", "--set", "lofi.epochs=2"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --set lofi.epochs=2: lofi.epochs is given twice (--set lofi.epochs=1 before it)"
    )


@pytest.mark.parametrize("memory", ["1.2.3", "9" * 400, "1e300", "-1GiB", "GiB"])
def test_plan_memory_of_any_text_is_one_line(memory):
    result = CliRunner().invoke(train_cli, ["plan", "--memory", memory])
    assert result.exit_code == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --memory must look like 24GiB")
    assert len(lines[0]) < 200


def test_trt_shapes_are_bounded():
    from lofi.export.trt_shapes import Profiles

    assert Profiles.parse("batch=1:16:100000").batch == (1, 16, 100_000)
    for spec in ("batch=1:16:100001", "length=1:2:" + "9" * 30, "batch=0:1:2"):
        with pytest.raises(LofiError, match="needs 1 <= MIN <= OPT <= MAX <= 100000"):
            Profiles.parse(spec)
