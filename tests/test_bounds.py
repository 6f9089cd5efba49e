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
    COUNT,
    DURATION,
    FPS,
    FRACTION,
    FRAME_SIDE,
    MAX_NUMBER_CHARS,
    PLANNED,
    QUALITY,
    SCORE,
    SEED,
    TIMEOUT,
    TIMESTAMP,
    WORKERS,
    Bound,
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


# the Bound itself: edges, kinds, and the values the issue names


def test_closed_and_open_edges():
    closed = Bound(1, 3)
    assert closed.holds(1) and closed.holds(3) and closed.holds(2.5)
    assert not closed.holds(0.999) and not closed.holds(3.001)
    half = Bound(0, 1, open_low=True, open_high=True)
    assert not half.holds(0) and not half.holds(1) and half.holds(0.5)
    assert half.holds(5e-324)  # open at 0 means > 0, nothing more
    assert Bound(0, 1, open_high=True).holds(0)
    assert Bound(0, 1, open_low=True).holds(1)


def test_kinds():
    ints = Bound(0, 10, integer=True)
    assert ints.holds(3) and not ints.holds(3.0) and not ints.holds(True)
    assert not Bound(0, 10).holds(False)
    assert not Bound(0, 10).holds("3") and not Bound(0, 10).holds(None)
    for bad in (math.nan, math.inf, -math.inf):
        assert not Bound(-math.inf, math.inf).holds(bad)
    assert not ints.holds(10**5000) and not Bound(0, 10).holds(-(10**5000))


@pytest.mark.parametrize("bound", [FPS, DURATION, TIMEOUT])
def test_positive_physical_values_refuse_tiny_and_huge(bound):
    assert not bound.holds(1e-300) and not bound.holds(1e300) and not bound.holds(0)
    assert bound.holds(bound.low) and bound.holds(bound.high)


def test_ranges_the_issue_names():
    assert FPS.holds(1000) and not FPS.holds(1000.001)
    assert FRAME_SIDE.holds(16384) and not FRAME_SIDE.holds(16385) and not FRAME_SIDE.holds(0)
    assert DURATION.holds(3 * 24 * 3600)  # a few days
    assert SEED.holds(2**32 - 1) and not SEED.holds(2**32) and not SEED.holds(-1)


def test_parse():
    assert Bound(0, 10).parse(" 2.5 ") == 2.5
    assert Bound(0, 10, integer=True).parse("7") == 7
    assert Bound(0, 10, integer=True).parse("1e3") is None  # an integer is written as one
    assert Bound(0, 10, integer=True).parse("2.0") is None
    assert Bound(0, 10).parse("x") is None
    assert Bound(0, 10).parse("9" * MAX_NUMBER_CHARS) == float("9" * MAX_NUMBER_CHARS)
    assert Bound(0, 10).parse("9" * (MAX_NUMBER_CHARS + 1)) is None
    assert Bound(0, 10, integer=True).parse("9" * 5000) is None  # no ValueError from int()


def test_check_and_wording():
    assert Bound(1, 16384, integer=True).expected() == "an integer >= 1 and <= 16384"
    assert Bound(0, 1, open_low=True, open_high=True).expected() == "a number > 0 and < 1"
    assert Bound(0.001, 604800.0).expected() == "a number >= 0.001 and <= 604800"
    assert Bound(1e-12, 1e6).expected() == "a number >= 1e-12 and <= 1000000"
    value = Bound(0, 10).check(3, "f.json: 'x'")
    assert value == 3.0 and isinstance(value, float)
    assert Bound(0, 10, integer=True).check(3, "x") == 3
    with pytest.raises(LofiError) as err:
        Bound(0, 10).check(10**5000, "f.json: 'duration'")
    assert str(err.value) == (
        "f.json: 'duration' = <integer of about 5000 digits>: expected a number >= 0 and <= 10"
    )
    with pytest.raises(LofiError) as err:
        Bound(0, 10).check("\x1b[2J" * 100, "w")
    assert "\x1b" not in str(err.value) and len(str(err.value)) < 150


def test_number_and_pair_types_convert():
    # without a command line: what an option of each type hands its command
    fps = click.Option(["--fps"], type=Number(FPS))
    assert Number(FPS).convert("8", fps, None) == 8.0 and isinstance(
        Number(FPS).convert("8", fps, None), float
    )
    assert Number(SEED).convert("7", None, None) == 7
    assert Number(SEED).convert(7, None, None) == 7  # a default arrives as a number
    with pytest.raises(click.UsageError) as err:
        Number(FPS).convert("0", fps, None)
    assert err.value.format_message() == "--fps = '0': expected a number >= 0.01 and <= 1000"
    with pytest.raises(click.UsageError, match="^value = 'x'"):
        Number(FPS).convert("x", None, None)
    size = Pair("x", FRAME_SIDE, "HEIGHTxWIDTH")
    assert size.convert("64x48", None, None) == "64x48"
    for bad in ("64x", "64x48x2", "0x48", "64x16385", "64.5x48", "x"):
        with pytest.raises(click.UsageError, match="expected HEIGHTxWIDTH, each an integer >= 1"):
            size.convert(bad, None, None)
    assert Pair(":", DURATION, "MIN:MAX").convert("0.5:20", None, None) == "0.5:20"


def test_the_documented_ranges():
    # docs/RELIABILITY.md lists these ranges; a changed one must change the table too
    assert (FPS.low, FPS.high) == (0.01, 1000)
    assert (FRAME_SIDE.low, FRAME_SIDE.high) == (1, 16384)
    assert (DURATION.low, DURATION.high) == (0.001, 7 * 24 * 3600)
    assert (TIMESTAMP.low, TIMESTAMP.high) == (-7 * 24 * 3600, 7 * 24 * 3600)
    assert (SCORE.low, SCORE.high) == (-1e6, 1e6)
    assert (TIMEOUT.low, TIMEOUT.high) == (0.1, 24 * 3600)
    assert (WORKERS.low, WORKERS.high, PLANNED.low, PLANNED.high) == (1, 1024, 0, 1024)
    assert (COUNT.low, COUNT.high, QUALITY.low, QUALITY.high) == (0, 100_000, 1, 100)
    assert (FRACTION.low, FRACTION.high) == (0, 1)
    assert all(b.integer for b in (FRAME_SIDE, WORKERS, PLANNED, COUNT, SEED, QUALITY)) and not any(
        b.integer for b in (FPS, DURATION, TIMESTAMP, SCORE, TIMEOUT, FRACTION)
    )
    assert not any(
        b.open_low or b.open_high
        for b in (FPS, FRAME_SIDE, DURATION, TIMESTAMP, SCORE, TIMEOUT, WORKERS, PLANNED, COUNT)
    )
