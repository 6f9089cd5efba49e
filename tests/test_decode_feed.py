"""A decode thread hands frames over one at a time while the consumer keeps up, and in chunks
while it is behind; nothing is lost, reordered or held back past the source's end or error."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from lofi.runtime.decode import DONE, Feed


def frames(count: int, delay: float = 0.0, fail_at: int | None = None):
    for i in range(count):
        if i == fail_at:
            raise OSError("read error")
        if delay:
            time.sleep(delay)
        yield np.full((2, 2, 3), i, np.int32)


def consume(feed: Feed, pause: float = 0.0, first_pause: float = 0.0) -> list:
    """Every item until DONE or an error; `first_pause` lets the producer run ahead first."""
    time.sleep(first_pause)
    items = []
    while True:
        item = feed.queue.get(timeout=5)
        items.append(item)
        if item is DONE or isinstance(item, BaseException):
            return items
        time.sleep(pause)


def values(items: list) -> list[int]:
    return [int(f[0, 0, 0]) for item in items if isinstance(item, list) for f, _ in item]


def test_a_consumer_behind_gets_chunks_in_order_and_everything():
    feed = Feed(frames(200), depth=64, wake=threading.Event(), chunk=16)
    items = consume(feed, first_pause=0.3)
    chunks = [i for i in items if isinstance(i, list)]
    assert values(items) == list(range(200)) and items[-1] is DONE
    assert max(len(c) for c in chunks) == 16 and len(chunks) < 40
    arrivals = [t for c in chunks for _, t in c]
    assert arrivals == sorted(arrivals)


def test_a_consumer_that_keeps_up_gets_each_frame_at_once():
    feed = Feed(frames(20, delay=0.01), depth=64, wake=threading.Event(), chunk=16)
    items = consume(feed)
    assert [len(i) for i in items[:-1]] == [1] * 20 and values(items) == list(range(20))


def test_chunk_one_hands_every_frame_over_alone_even_when_behind():
    feed = Feed(frames(50), depth=64, wake=threading.Event(), chunk=1)
    items = consume(feed, first_pause=0.2)
    assert [len(i) for i in items[:-1]] == [1] * 50


@pytest.mark.parametrize("chunk", [1, 16])
def test_frames_held_when_the_source_fails_come_before_the_error(chunk):
    feed = Feed(frames(40, fail_at=37), depth=64, wake=threading.Event(), chunk=chunk)
    items = consume(feed, first_pause=0.2)
    assert values(items) == list(range(37))
    assert isinstance(items[-1], OSError)


def test_at_most_depth_frames_wait():
    feed = Feed(frames(500), depth=32, wake=threading.Event(), chunk=16)
    time.sleep(0.3)
    waiting = sum(len(i) for i in list(feed.queue.queue) if isinstance(i, list))
    assert 0 < waiting <= 32  # two chunks of 16 at most
    items = consume(feed)
    assert values(items) == list(range(500))
