"""The runtime's own choices where the user leaves a knob at 0: threads per library, encoder
batch, and decoding only the frames snippets take."""

from __future__ import annotations

import os

import numpy as np
import pytest
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.models import BundleModels
from lofi.runtime.pipeline import Options, Pipeline, Plan, plan, planned_models
from lofi.runtime.snippets import SnippetGrid


@pytest.mark.parametrize(
    "device,parallel,cores,want",
    [
        ("cpu", 1, 2, Plan(1, 1, 4)),  # the dev machine: one core each, measured fastest
        # as many sources as cores: one-thread encoder calls on every core at once
        ("cpu", 2, 2, Plan(1, 1, 4, 2)),
        ("cpu", 4, 2, Plan(1, 1, 4, 2)),
        ("cpu", 3, 4, Plan(1, 1, 4, 1)),
        # cores to spare: FFmpeg's frame threading, one-thread encoder calls on the rest at once
        ("cpu", 1, 16, Plan(1, 0, 16, 15)),
        ("cpu", 4, 16, Plan(1, 0, 16, 12)),
        ("cpu", 8, 16, Plan(1, 1, 4, 8)),
        ("cpu", 16, 16, Plan(1, 1, 4, 16)),
        ("cuda", 1, 16, Plan(0, 0, 16)),
        ("trt", 4, 2, Plan(0, 1, 16)),
    ],
)
def test_plan(device, parallel, cores, want):
    assert plan(device, parallel, cores) == want


def test_plan_counts_the_cores_this_process_may_use(monkeypatch):
    # two cores of a 16-core machine (taskset, a container's cpuset) plan as the dev machine
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
    assert plan("cpu", 1) == Plan(1, 1, 4)


@pytest.mark.parametrize(
    "bad", [{"parallel": 0}, {"queue_depth": 0}, {"encoder_batch": -1}, {"encoder_workers": -1}]
)
def test_a_pipeline_refuses_knobs_out_of_range(tiny_bundle, bad):
    with pytest.raises(LofiError, match="--batch and --workers at least 0"):
        Pipeline(BundleModels(tiny_bundle), [], options=Options(**bad))


def test_a_pipeline_resolves_the_plan_and_keeps_what_was_given(tiny_bundle):
    models = BundleModels(tiny_bundle)
    chosen = plan("cpu", 2)
    auto = Pipeline(models, [], options=Options(parallel=2)).opts
    assert (auto.encoder_batch, auto.decoder_threads) == (4, chosen.decoder_threads)
    given = Pipeline(models, [], options=Options(encoder_batch=7, decoder_threads=3)).opts
    assert (given.encoder_batch, given.decoder_threads) == (7, 3)


@pytest.mark.parametrize("hop,k,stride", [(4, 4, 2), (3, 4, 2), (2, 3, 3), (2.5, 4, 1), (8, 2, 2)])
def test_grid_uses_exactly_the_frames_its_snippets_take(hop, k, stride):
    grid = SnippetGrid(8.0, k, stride, hop)
    taken = set(grid.frame_indices(0, grid.count(400), 10**9).ravel().tolist())
    assert [grid.uses(f) for f in range(300)] == [f in taken for f in range(300)]


@pytest.mark.parametrize("threads", [0, 1])
def test_reader_converts_only_kept_frames_and_always_the_last(tiny_synth, threads):
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    full = read_video(video, 8.0, (32, 32))
    even = list(VideoReader(video, 8.0, (32, 32), threads=threads, keep=lambda n: n % 2 == 0))
    assert len(even) == len(full) and len(full) % 2 == 0  # the last frame is odd: kept anyway
    for n, frame in enumerate(even):
        if n % 2 == 0 or n == len(full) - 1:
            np.testing.assert_array_equal(frame, full[n])
        else:
            assert frame is None


def test_planned_models_take_the_plans_threads_unless_given(tiny_bundle):
    def intra(models) -> int:
        return models.encoder.session.get_session_options().intra_op_num_threads

    assert intra(planned_models(tiny_bundle, parallel=2)) == plan("cpu", 2).ort_threads
    assert intra(planned_models(tiny_bundle, threads=3)) == 3
