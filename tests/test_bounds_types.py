"""The shared bounds of runtime/bounds.py themselves: a range's edges and kinds, parsing a
number from text of bounded length, the wording of the one line, the click types' conversions,
and the documented ranges. Torch-free and fast: bench/mutate.py runs it for every mutant."""

from __future__ import annotations

import math

import click
import pytest
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
    OptionError,
    Pair,
)
from lofi.runtime.errors import LofiError

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
    with pytest.raises(click.UsageError, match="^--fps = '0'"):  # the long name of two
        Number(FPS).convert("0", click.Option(["-f", "--fps"]), None)
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
    assert MAX_NUMBER_CHARS == 40
    assert (SEED.low, SEED.high) == (0, 2**32 - 1)
    assert all(b.integer for b in (FRAME_SIDE, WORKERS, PLANNED, COUNT, SEED, QUALITY)) and not any(
        b.integer for b in (FPS, DURATION, TIMESTAMP, SCORE, TIMEOUT, FRACTION)
    )
    assert not any(
        b.open_low or b.open_high
        for b in (FPS, FRAME_SIDE, DURATION, TIMESTAMP, SCORE, TIMEOUT, WORKERS, PLANNED, COUNT)
    )


def test_shared_bounds_cannot_be_changed_in_place():
    # every command shares these objects: one changing a range would change it for all
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        FPS.high = 10**9  # type: ignore[misc]


def test_an_option_error_is_one_line_on_stderr(capsys):
    OptionError("--fps = '0': expected a number").show()
    out, err = capsys.readouterr()
    assert out == "" and err == "error: --fps = '0': expected a number\n"
