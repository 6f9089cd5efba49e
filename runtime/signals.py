"""Stopping a command from outside: the first SIGINT/SIGTERM ends a stream cleanly, a second
aborts; a command with worker processes stops them at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def graceful_stop() -> Iterator[Callable[[], bool]]:
    """The first SIGINT/SIGTERM asks the stream to end as if the video had ended there, so a live
    stream stopped by Ctrl-C or a service manager still flushes its events and writes its files;
    a second one aborts at once (exit 130).

    Python runs signal handlers only between bytecodes, which never come while the main thread
    waits inside FFmpeg or an inference call. So the signals are also counted by a thread woken
    through `signal.set_wakeup_fd`, written by the C-level handler the moment a signal lands."""
    requested = threading.Event()
    r, w = socket.socketpair()
    w.setblocking(False)

    def handler(signum: int, frame: object) -> None:
        requested.set()

    def watch() -> None:
        count = 0
        while True:
            try:
                got = r.recv(16)
            except OSError:
                return
            if not got:
                return
            count += len(got)
            if count == 1:
                requested.set()
                print("stopping: finishing the current video (again to abort)", file=sys.stderr)
            else:
                print("error: aborted", file=sys.stderr, flush=True)
                os._exit(130)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, daemon=True, name="lofi-signals")
    watcher.start()
    try:
        yield requested.is_set
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, h in previous.items():
            signal.signal(sig, h)
        w.close()
        watcher.join(timeout=1.0)
        r.close()


@contextmanager
def stop_workers_on_signal() -> Iterator[None]:
    """SIGINT or SIGTERM to a command that runs worker processes (lofi-data prepare) kills its
    workers at once, not after the videos they are decoding (a worker holds a whole video's
    frames, a gigabyte, for minutes), and raises KeyboardInterrupt in the main thread, which
    unwinds through the command's own cleanup (the cache index keeps every video finished)
    to exit status 130. The workers themselves die with the process even when it is killed
    by SIGKILL (frame_workers.die_with_parent)."""

    def handler(signum: int, frame: object) -> None:
        for child in multiprocessing.active_children():
            child.kill()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
