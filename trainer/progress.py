"""A progress bar for the long data jobs (rendering, decoding) that report `(done, total)`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """Yield a `(done, total)` callback that drives a tqdm bar, closed on exit; the bar draws
    only on a terminal (a log file would get a carriage-return flood)."""
    bar = tqdm(desc=desc, leave=False, disable=not sys.stderr.isatty())

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
