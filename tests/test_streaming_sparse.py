"""Streaming equals offline where it matters: a long video with sparse events, most of which are
final long before the end. The real StreamLocalizer, decoding and StreamingFinalizer run on a
hand-built numpy model whose head has a known receptive field (a box filter over pooled
features), so a window closed too early, a margin too small or a reach forgotten changes the
events, and the comparison with offline inference (as sets, with a float tolerance) fails.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from lofi.runtime.bundle import Manifest
from lofi.runtime.postprocess import LevelOutputs, PostConfig
from lofi.runtime.snippets import SnippetGrid
from lofi.runtime.stats import StageClock
from lofi.runtime.streaming import StreamLocalizer, localize_offline

FPS = 10.0
GRID = SnippetGrid(fps=FPS, k=2, frame_stride=1, hop=1.0)  # snippet i: frames i, i + 1
HOP2 = SnippetGrid(fps=FPS, k=3, frame_stride=2, hop=2.0)  # snippet i: frames 2i, 2i + 2, 2i + 4
STRIDES = [1, 2]
RADIUS = 2  # box filter half-width, in positions of each level
WINDOW, CONTEXT = 8, 6  # the filter reaches 2 * RADIUS = 4 snippets back, 5 ahead: 6 covers it
MAX_REACH = 8.0  # snippets


class BoxFilterModels:
    """BundleModels' interface in numpy. Encoder: a snippet's feature per class is the mean of
    that colour channel over its frames (0..1). Head, per level of stride s: features pooled over
    s snippets, summed over 2 * RADIUS + 1 positions (zero beyond the input, as a convolution
    pads); class logit 6 q - 4 (fires where q > 0.18; the background scores 0.018), distances 1 + 2 q in strides each way."""

    def __init__(self, post: PostConfig, grid: SnippetGrid = GRID, window: int = WINDOW) -> None:
        self.longest = 0  # the longest head input so far (snippets)
        self.manifest = Manifest(
            labels=["red", "green"],
            grid=grid,
            height=1,
            width=1,
            mean=[0.0, 0.0, 0.0],
            std=[1.0, 1.0, 1.0],
            feature_dim=2,
            post=post,
            precision="fp32",
            files={},
            engines=[],
            strides=STRIDES,
            window=window,
            context=CONTEXT,
            max_reach=MAX_REACH,
        )

    def encode(self, snippets: np.ndarray) -> np.ndarray:
        return snippets[..., :2].astype(np.float32).mean(axis=(1, 2, 3)) / 255.0

    def head(self, features: np.ndarray) -> LevelOutputs:
        self.longest = max(self.longest, len(features))
        out = []
        for s in STRIDES:
            pooled = features.reshape(-1, s, features.shape[1]).mean(axis=1).T  # (C, n)
            padded = np.pad(pooled, ((0, 0), (RADIUS, RADIUS)))
            n = pooled.shape[1]
            q = sum(padded[:, d : d + n] for d in range(2 * RADIUS + 1))
            total = q.sum(axis=0)
            out.append((6.0 * q - 4.0, np.stack([1.0 + 2.0 * total, 1.0 + 2.0 * total])))
        return out

    def padded_length(self, n: int) -> int:
        s = max(STRIDES)
        return max(s, math.ceil(n / s) * s)


def sparse_video(seed: int, n_frames: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(n_frames, 1, 1, 3) frames and the events (first frame, last frame + 1, class): short
    bursts of one colour with gaps from a few frames (neighbours whose candidates overlap) to
    many (events alone)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n_frames, 1, 1, 3), dtype=np.uint8)
    events, t = [], int(rng.integers(5, 30))
    while True:
        length = int(rng.integers(2, 14))
        if t + length > n_frames - 40:
            break
        cls = int(rng.integers(0, 2))
        frames[t : t + length, 0, 0, cls] = 255
        events.append((t, t + length, cls))
        t += length + int(rng.choice([int(rng.integers(3, 12)), int(rng.integers(25, 90))]))
    return frames, events


def key(segs) -> list[tuple[str, float, float, float]]:
    return sorted((s.label, s.start, s.end, s.score) for s in segs)


def assert_same_events(streamed, offline, tol: float = 1e-9) -> None:
    a, b = key(streamed), key(offline)
    assert len(a) == len(b), f"{len(a)} streamed events against {len(b)} offline"
    for x, y in zip(a, b):
        assert x[0] == y[0] and np.allclose(x[1:], y[1:], rtol=0, atol=tol), (x, y)


POSTS = {
    # the default: Gaussian soft-NMS, every overlap decays a score a little
    "soft": PostConfig(score_threshold=0.05, nms="soft", sigma=0.5, max_segments=100_000),
    # hard NMS with a low threshold: any overlap of two candidates removes one
    "hard": PostConfig(score_threshold=0.05, nms="hard", iou_threshold=0.01, max_segments=100_000),
}


@pytest.mark.parametrize("nms, batch", [("soft", 1), ("hard", 1), ("soft", 16)])
def test_a_long_sparse_stream_equals_offline_and_emits_early(nms, batch):
    models = BoxFilterModels(POSTS[nms])
    n_frames = 2400  # 240 s, 300 head windows
    frames, events = sparse_video(11, n_frames)
    assert len(events) > 40
    offline, _ = localize_offline(models, frames, "v")
    emitted: list[tuple[float, float]] = []
    clock = StageClock()
    pushed: list[int] = []  # frames pushed when each event came out
    loc = StreamLocalizer(
        models,
        "v",
        batch,
        on_event=lambda s, now: emitted.append((s, now)) or pushed.append(loc.n_frames),
        clock=clock,
    )
    for f in frames:
        loc.push(f)
    loc.finish()
    assert loc.head_calls == n_frames // WINDOW == clock.calls["head"]  # 2399 snippets, padded
    assert clock.items["head"] == clock.items["postprocess"] == n_frames
    assert clock.items["encoder"] == GRID.count(n_frames)
    assert len(offline) > 60  # many events to compare, not two empty lists
    assert_same_events([s for s, _ in emitted], offline)
    assert_same_events(loc.results(), offline)
    # each event is emitted when its NMS group is final: not before the stream has seen the
    # snippets whose candidates could still reach back into the group (the reach past the
    # group's end, and the head's margin after those), and no later than the next window's
    # end after that (and the rest of an encoder batch). With hop 1, in seconds (an encoder
    # batch of 1 makes both bounds tight, so a window closed one snippet early or late fails):
    ends = group_ends(models, frames)
    duration = n_frames / FPS
    soonest = (MAX_REACH + CONTEXT) / FPS
    latest = (MAX_REACH + WINDOW + CONTEXT + batch - 1) / FPS
    n_snippets = GRID.count(n_frames)
    for s, now in emitted:
        end = ends[(s.label, s.start, s.end)]
        assert min(end + soonest, duration) - 1e-9 <= now <= end + latest + 1e-9, (s, now, end)
        if batch == 1:  # exactly: after the first window whose end lies a reach past the group
            b = WINDOW * math.ceil((GRID.index(end) + MAX_REACH - 1e-9) / WINDOW)
            seen = GRID.last_frame_needed(b + CONTEXT - 1) + 1
            assert now == (seen / FPS if b + CONTEXT <= n_snippets else duration), (s, now, end)
    if batch == 1:  # and on the very frame that makes it final: no hidden lag behind the stamp
        assert all(round(now * FPS) == n for (_, now), n in zip(emitted, pushed))
    # so nearly all long before the end of the video
    early = sum(now < duration - 10.0 for _, now in emitted)
    assert early >= 0.9 * len(emitted)


def group_ends(models: BoxFilterModels, frames: np.ndarray) -> dict[tuple, float]:
    """(label, start, end) of every candidate of the whole video -> the end of its NMS group
    (same-class candidates chained by overlap), from offline inference that keeps them all."""
    keep_all = replace(models.manifest.post, nms="hard", iou_threshold=1.0)
    every, _ = localize_offline(BoxFilterModels(keep_all), frames, "v")
    ends: dict[tuple, float] = {}
    for lab in {s.label for s in every}:
        segs = sorted((s.start, s.end) for s in every if s.label == lab)
        group: list[tuple[float, float]] = []
        for seg in [*segs, (math.inf, math.inf)]:
            reach = max((e for _, e in group), default=-math.inf)
            if seg[0] >= reach and group:
                ends.update({(lab, a, b): reach for a, b in group})
                group = []
            group.append(seg)
    return ends


def test_the_fixture_interacts_across_windows():
    """The comparison above can only catch an early close if candidates of one NMS group really
    straddle head windows: check that the stream has such groups (a guard on the fixture)."""
    models = BoxFilterModels(POSTS["hard"])
    frames, _ = sparse_video(11, 2400)
    loose = replace(POSTS["hard"], iou_threshold=1.0)  # keeps every candidate
    models_loose = BoxFilterModels(loose)
    every, _ = localize_offline(models_loose, frames, "v")
    kept, _ = localize_offline(models, frames, "v")
    assert len(kept) < len(every)  # NMS removes candidates
    # candidates of one class that overlap and lie on both sides of some window boundary
    bounds = GRID.time(np.arange(WINDOW, 2400, WINDOW) - MAX_REACH)
    straddle = 0
    for lab in ("red", "green"):
        segs = sorted((s.start, s.end) for s in every if s.label == lab)
        for (_, e0), (s1, _) in zip(segs, segs[1:]):
            straddle += bool(np.any((e0 > bounds) & (s1 < bounds) & (s1 < e0)))
    assert straddle > 20


def test_the_stream_keeps_its_buffers_small():
    # frames, features and pending candidates stay bounded by the window, not the video
    models = BoxFilterModels(POSTS["soft"])
    frames, _ = sparse_video(5, 1200)
    loc = StreamLocalizer(models, "v")
    most = np.zeros(3, dtype=int)
    for f in frames:
        loc.push(f)
        most = np.maximum(most, [len(loc.frames), len(loc.feats), len(loc.finalizer.pending)])
    total = len(loc.emitted) + len(loc.finish())
    assert loc.batch == 16 and all(not level for level in loc.recorded)  # nothing kept unasked
    assert most[0] <= loc.batch + GRID.span and most[1] <= WINDOW + 2 * CONTEXT + loc.batch
    assert most[2] < 200 < 2 * most[2] < total


def shared_encoder_stream(models, frames: np.ndarray, record: bool = False) -> StreamLocalizer:
    """The pipeline's way: frames in, ready snippets taken 5 at a time, encoded outside,
    features handed back, close() once every snippet was taken."""
    loc = StreamLocalizer(models, "v", record=record)
    for f in frames:
        loc.add_frame(f)
        while loc.ready() >= 5:
            loc.add_features(models.encode(loc.take(5)))
    if rest := loc.ready(ended=True):
        loc.add_features(models.encode(loc.take(rest, ended=True)))
    assert loc.ready(ended=True) == 0
    loc.close()
    return loc


@pytest.mark.parametrize(
    "grid, window", [(GRID, WINDOW), (HOP2, WINDOW), (GRID, 4)], ids=["hop1", "hop2", "narrow"]
)
@pytest.mark.parametrize("n_frames", [1, 2, 5, 9, 17, 37, 301])
def test_shared_encoder_streams_of_any_length_equal_offline(n_frames, grid, window):
    # lengths around a snippet, a window, a window with its margin and many windows, on a grid
    # of overlapping snippets, on one whose snippets skip frames, and with windows narrower
    # than their margin; the head's outputs themselves are recorded and equal offline's
    # position for position
    models = BoxFilterModels(POSTS["soft"], grid, window)
    # faint noise under the threshold makes every frame distinct: a snippet built from the wrong
    # frames changes the recorded outputs
    frames = np.random.default_rng(n_frames).integers(0, 6, (n_frames, 1, 1, 3), dtype=np.uint8)
    frames[n_frames // 3 : n_frames // 3 + 6, ..., 0] = 255
    frames[-4:, ..., 1] = 255  # an event running into the end
    offline, outputs = localize_offline(models, frames, "v")
    models.longest = 0  # offline's one call takes the whole video
    loc = shared_encoder_stream(models, frames, record=True)
    assert offline and loc.emitted  # never two empty lists
    assert_same_events(loc.emitted, offline)
    for (c0, r0), (c1, r1) in zip(outputs, loc.recorded_outputs()):
        assert c0.shape == c1.shape and np.array_equal(c0, c1) and np.array_equal(r0, r1)
    assert len(loc.frames) <= grid.span and len(loc.feats) <= window + 2 * CONTEXT
    # each head call sees at most a window and its two margins, however long the stream
    assert models.longest <= window + 2 * CONTEXT
    # and the localizer's own encoder batches (the last one short) give the same events
    pushed = StreamLocalizer(models, "v")
    for f in frames:
        pushed.push(f)
    pushed.finish()
    assert_same_events(pushed.emitted, offline)


@pytest.mark.parametrize("grid", [GRID, HOP2], ids=["hop1", "hop2"])
def test_a_snippet_is_ready_once_its_last_frame_is_here(grid):
    # ready() counts snippets whose frames have all arrived; once the stream has ended, the
    # rest too (the last snippets repeat the last frame)
    loc = StreamLocalizer(BoxFilterModels(POSTS["soft"], grid), "v")
    frame = np.zeros((1, 1, 3), dtype=np.uint8)
    for n in range(1, 30):
        loc.add_frame(frame)
        assert loc.ready() == sum(grid.last_frame_needed(i) < n for i in range(n)), n
        assert loc.ready(ended=True) == grid.count(n)
    assert loc.ready() == (29 - grid.span) // int(grid.hop) + 1


def test_a_snippet_cannot_be_taken_before_its_frames():
    # 4 frames of 6-frame snippets: none complete, one once the stream has ended
    loc = StreamLocalizer(BoxFilterModels(POSTS["soft"], HOP2), "v")
    frame = np.zeros((1, 1, 3), dtype=np.uint8)
    for _ in range(4):
        loc.add_frame(frame)
    with pytest.raises(ValueError, match="v: 1 snippets asked, 0 ready"):
        loc.take(1)
    assert loc.take(1, ended=True).shape == (1, 3, 1, 1, 3)  # the last frame repeated
    with pytest.raises(ValueError, match="1 snippets asked, 0 ready"):
        loc.take(1, ended=True)


def test_the_localizer_kinds_say_who_encodes():
    # the pipeline batches encoder calls across StreamLocalizers; a whole-video one encodes alone
    from lofi.runtime.streaming import WholeVideoLocalizer

    assert StreamLocalizer.shares_encoder is True and WholeVideoLocalizer.shares_encoder is False


def test_an_empty_stream_emits_nothing():
    models = BoxFilterModels(POSTS["soft"])
    loc = StreamLocalizer(models, "v")
    assert loc.finish() == [] and loc.close() == [] and loc.results() == []
    assert loc.head_calls == 0


def test_the_kept_events_are_capped_and_still_the_offline_top():
    # max_segments 5: offline keeps the top 5; the stream emits every event as it is final but
    # keeps only up to 2 x 5 for the results file (trimmed back to 5 past that), whose top 5
    # are offline's. Hard NMS: about one event per group, so the kept list grows one at a time
    post = replace(POSTS["hard"], max_segments=5)
    models = BoxFilterModels(post)
    frames, _ = sparse_video(3, 1200)
    offline, _ = localize_offline(models, frames, "v")
    events = []
    loc = StreamLocalizer(models, "v", on_event=lambda s, now: events.append(s))
    sizes = set()
    for f in frames:
        loc.push(f)
        sizes.add(len(loc.emitted))
    loc.finish()
    assert len(offline) == 5 and len(events) > 25
    assert max(sizes) == 10 and min(sizes - {0, 1, 2, 3, 4}) == 5
    assert loc.results() == offline


def test_events_are_stamped_with_the_frames_the_head_has_seen():
    # the pipeline may decode frames ahead of the encoder: emitted_at is the time of the last
    # frame behind the features the head has used, not of the last frame decoded, so frames all
    # added first and features handed over one snippet at a time stamp events as a stream that
    # decodes one frame at a time does
    models = BoxFilterModels(POSTS["soft"])
    frames, _ = sparse_video(2, 600)
    pushed: list[tuple] = []
    loc = StreamLocalizer(models, "v", 1, on_event=lambda s, now: pushed.append((s, now)))
    for f in frames:
        loc.push(f)
    loc.finish()
    ahead: list[tuple] = []
    loc = StreamLocalizer(models, "v", on_event=lambda s, now: ahead.append((s, now)))
    for f in frames:
        loc.add_frame(f)
    while loc.ready():
        loc.add_features(models.encode(loc.take(1)))
    if rest := loc.ready(ended=True):
        loc.add_features(models.encode(loc.take(rest, ended=True)))
    loc.close()
    assert ahead == pushed and sum(now < 50.0 for _, now in ahead) > 10
