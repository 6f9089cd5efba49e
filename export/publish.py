"""Publishing a bundle folder whole or not at all, and SIGTERM as Ctrl-C while exporting.

An export writes OUT.partial and renames it to OUT at the end. A service manager stops a job
with SIGTERM, whose default action kills the process on the spot: OUT.partial would stay behind
and the exit status would not be the documented 130. Under `stop_signals`, SIGTERM (like
SIGINT) raises KeyboardInterrupt, so the export's cleanup runs; while the folder is being
swapped into place the signal waits until the swap is done."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


class _Stop:
    """SIGINT/SIGTERM handler: KeyboardInterrupt now, or after the current `deferred` block."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.deferring:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


_STOP = _Stop()


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (exit 130 through
    `cli_errors`), except inside `publish`, which they never cut in two."""
    previous = {s: signal.signal(s, _STOP) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def publish(partial: Path, final: Path) -> None:
    """Move the complete folder `partial` to `final`, replacing a previous bundle there: where
    the system can swap two folders atomically, `final` is at every instant either the old
    bundle or the new one; elsewhere the old one is moved aside first (a kill in between leaves
    both complete, at `partial` and `final`.old). Signals wait until the move is done."""
    with _STOP.deferred():
        if not final.exists() or (final.is_dir() and not any(final.iterdir())):
            partial.rename(final)  # rename(2) replaces an empty folder in one step
            return
        if _exchange(partial, final):
            shutil.rmtree(partial)  # the old bundle, now at partial's name
            return
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old)
