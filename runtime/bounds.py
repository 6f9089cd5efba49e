"""Physical bounds of the numbers the toolkit reads (command-line options, config fields, file
fields) and the click parameter types every command's numeric options use.

One place says what a frame rate, a frame side, a duration or a count may be, so a 4,000-digit
integer (Python refuses to convert it and raises), 1e300 (a loop that never ends, a tensor that
cannot be allocated) or 1e-300 where a positive quantity belongs (a division that overflows) is
refused in one line naming the option or field and the range, before any work starts. The
bounds are generous: they only rule out what cannot be meant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import click
from lofi.runtime.errors import LofiError, shown

# the text of a number: digits, sign, point and exponent; longer is refused before converting
MAX_NUMBER_CHARS = 40


def _text(x: float) -> str:
    """A bound as an error line writes it: 16384, 0.5, 1e-06 (never 1.6384e+04)."""
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


@dataclass(frozen=True)
class Bound:
    """A closed (or, where said, open) range of numbers; `integer` also refuses fractions."""

    low: float
    high: float
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def expected(self) -> str:
        """What the range accepts, in words: 'an integer >= 1 and <= 16384'."""
        low = f"{'>' if self.open_low else '>='} {_text(self.low)}"
        high = f"{'<' if self.open_high else '<='} {_text(self.high)}"
        return f"{'an integer' if self.integer else 'a number'} {low} and {high}"

    def holds(self, value: Any) -> bool:
        """Whether `value` is a number of the right kind inside the range (NaN never is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def check(self, value: Any, where: str) -> Any:
        """`value` itself (a float for a non-integer range), or one LofiError line:
        '<where> = <value>: expected <range>'."""
        if not self.holds(value):
            raise LofiError(f"{where} = {shown(value)}: expected {self.expected()}")
        return value if self.integer else float(value)

    def parse(self, text: str) -> int | float | None:
        """The number `text` spells (an integer for an integer range), or None when it spells
        none or is too long to be one; the range is checked by `holds`."""
        text = text.strip()
        if len(text) > MAX_NUMBER_CHARS:
            return None
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            return None


DAY = 24 * 3600.0
WEEK = 7 * DAY

# frames per second of a video or a frame cache: a frame every 100 s to a high-speed camera
FPS = Bound(0.01, 1000)
# pixels on a frame's side (any codec's limit is lower)
FRAME_SIDE = Bound(1, 16384, integer=True)
# a video's duration in seconds: a millisecond to a week
DURATION = Bound(1e-3, WEEK)
# a time on a video's timeline in seconds (a detector may overshoot the start a little)
TIMESTAMP = Bound(-WEEK, WEEK)
# a detection's confidence: any finite ranking value of a sane size
SCORE = Bound(-1e6, 1e6)
# waiting for a source, in seconds: a tenth of a second to a day
TIMEOUT = Bound(0.1, DAY)
# processes, threads, streams at once
WORKERS = Bound(1, 1024, integer=True)
# the same where 0 leaves the choice to a plan (lofi-stream --threads/--workers/--batch)
PLANNED = Bound(0, 1024, integer=True)
# videos, clips, tries: how many of something a command makes or does
COUNT = Bound(0, 100_000, integer=True)
# a random seed (NumPy's accept 0 .. 2**32 - 1)
SEED = Bound(0, 2**32 - 1, integer=True)
# a probability, a threshold, a fraction of something
FRACTION = Bound(0, 1)
# JPEG quality
QUALITY = Bound(1, 100, integer=True)


class OptionError(click.UsageError):
    """A bad option value: one `error:` line (no usage block), exit status 2 like every usage
    error click reports."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _option(param: click.Parameter | None) -> str:
    return max(param.opts, key=len) if param is not None and param.opts else "value"


class Number(click.ParamType):
    """A numeric option inside a `Bound`: `type=Number(FPS)`."""

    def __init__(self, bound: Bound) -> None:
        self.bound = bound
        self.name = "integer" if bound.integer else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = self.bound.parse(value) if isinstance(value, str) else value
        if number is None or not self.bound.holds(number):
            raise OptionError(
                f"{_option(param)} = {shown(value)}: expected {self.bound.expected()}"
            )
        return number if self.bound.integer else float(number)


class Pair(click.ParamType):
    """Two numbers joined by `sep` ('64x64', '20:50'), each inside `bound`. Returns the text as
    given, checked: the command splits it where it uses it."""

    def __init__(self, sep: str, bound: Bound, what: str) -> None:
        self.sep, self.bound, self.what = sep, bound, what
        self.name = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        parts = str(value).split(self.sep)
        numbers = [self.bound.parse(p) for p in parts]
        if len(parts) != 2 or not all(n is not None and self.bound.holds(n) for n in numbers):
            raise OptionError(
                f"{_option(param)} = {shown(value)}: expected {self.what}, each "
                f"{self.bound.expected()}"
            )
        return str(value)
