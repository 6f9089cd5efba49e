"""Decoding a batch's JPEG frames in worker processes, straight into shared memory.

Threads do not help here: Pillow's JPEG reading spends enough of each frame in Python that two
threads decode no faster than one (bench/frame_cache.py measured it). Processes do, and writing
into one shared buffer spares pickling megabytes of pixels back through a pipe.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np
from lofi.trainer.frame_store import JpegFrames

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_PARENT_EVERY = 0.5  # seconds between a worker's checks that its parent still lives

_stores: dict[str, JpegFrames] = {}  # per worker process: files it has opened
_buffers: dict[str, SharedMemory] = {}  # per worker process: the pool's buffer, attached once


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_PARENT_EVERY)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """Worker-process initializer: the worker ends when the process that started it (pid
    `parent`) ends, even by SIGKILL, instead of holding its memory for the rest of a long
    decode. On Linux the kernel sends it SIGKILL (prctl PR_SET_PDEATHSIG); everywhere a daemon
    thread also watches for the parent to go (the worker is handed to another parent then).
    Ctrl-C reaches the whole terminal's process group: the workers leave it to the parent,
    which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent was gone before the kernel was told
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes (the trainer's torch thread pools must not be forked) that
    die with this process (die_with_parent)."""
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def _attach(name: str) -> SharedMemory:
    if name not in _buffers:
        for old in _buffers.values():  # the pool grew its buffer: let go of the old one
            old.close()
        _buffers.clear()
        _buffers[name] = SharedMemory(name)
    return _buffers[name]


def _decode_into(job: tuple[str, int, tuple[int, ...], str, np.ndarray]) -> None:
    """Decode frames `idx` of one file straight into the shared buffer at `offset`."""
    name, offset, shape, path, idx = job
    store = _stores.get(path)
    if store is None:
        store = _stores[path] = JpegFrames(Path(path))
    out = np.ndarray(shape, np.uint8, _attach(name).buf, offset)
    for j, i in enumerate(idx):
        out[j] = store[int(i)]


class DecodePool:
    """`workers` processes (spawned: the trainer's torch thread pools must not be forked) that
    decode requests (file, frame indices) into one array per request."""

    def __init__(self, workers: int):
        self.pool = worker_pool(workers)
        # one buffer, reused across batches (no fresh page faults), grown when a batch needs it
        self._held: list[SharedMemory] = []
        weakref.finalize(self, DecodePool._release, self.pool, self._held)

    def _buffer(self, size: int) -> SharedMemory:
        if not self._held or self._held[0].size < size:
            for shm in self._held:
                shm.close()
                shm.unlink()
            self._held[:] = [SharedMemory(create=True, size=size)]
        return self._held[0]

    def read(self, jobs: list[tuple[Path, np.ndarray]], frame_shape: tuple[int, ...]) -> list:
        """One uint8 array (len(idx), *frame_shape) per (file, idx) job, each a copy."""
        sizes = [len(idx) * int(np.prod(frame_shape)) for _, idx in jobs]
        shm = self._buffer(max(1, sum(sizes)))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        tasks = [
            (shm.name, int(off), (len(idx), *frame_shape), str(path), idx)
            for (path, idx), off in zip(jobs, offsets)
        ]
        list(self.pool.map(_decode_into, tasks))
        flat = np.ndarray((sum(sizes),), np.uint8, shm.buf)
        out = [
            flat[off : off + size].reshape(len(idx), *frame_shape).copy()
            for (_, idx), off, size in zip(jobs, offsets, sizes)
        ]
        del flat
        return out

    @staticmethod
    def _release(pool: ProcessPoolExecutor, held: list[SharedMemory]) -> None:
        """Stop the workers, then free the buffer (also at exit, or a segment would stay)."""
        pool.shutdown(wait=True, cancel_futures=True)
        for shm in held:
            shm.close()
            shm.unlink()
        held.clear()
