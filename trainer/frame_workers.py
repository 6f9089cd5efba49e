"""Decoding a batch's JPEG frames in worker processes, straight into shared memory.

Threads do not help here: Pillow's JPEG reading spends enough of each frame in Python that two
threads decode no faster than one (bench/frame_cache.py measured it). Processes do, and writing
into one shared buffer spares pickling megabytes of pixels back through a pipe.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np
from lofi.trainer.frame_store import JpegFrames

_stores: dict[str, JpegFrames] = {}  # per worker process: files it has opened


def _decode_into(job: tuple[str, int, tuple[int, ...], str, np.ndarray]) -> None:
    name, offset, shape, path, idx = job
    store = _stores.get(path)
    if store is None:
        store = _stores[path] = JpegFrames(Path(path))
    shm = SharedMemory(name)
    try:
        out = np.ndarray(shape, np.uint8, shm.buf, offset)
        out[:] = store[idx]
        del out
    finally:
        shm.close()


class DecodePool:
    """`workers` processes (spawned: the trainer's torch thread pools must not be forked) that
    decode requests (file, frame indices) into one array per request."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def read(self, jobs: list[tuple[Path, np.ndarray]], frame_shape: tuple[int, ...]) -> list:
        sizes = [len(idx) * int(np.prod(frame_shape)) for _, idx in jobs]
        shm = SharedMemory(create=True, size=max(1, sum(sizes)))
        try:
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
            tasks = [
                (shm.name, int(off), (len(idx), *frame_shape), str(path), idx)
                for (path, idx), off in zip(jobs, offsets)
            ]
            list(self.pool.map(_decode_into, tasks))
            flat = np.ndarray((sum(sizes),), np.uint8, shm.buf).copy()
        finally:
            shm.close()
            shm.unlink()
        return [
            flat[off : off + size].reshape(len(idx), *frame_shape)
            for (_, idx), off, size in zip(jobs, offsets, sizes)
        ]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
