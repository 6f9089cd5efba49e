"""bench/runtime.py at toy size (a random-weight model, 6 s of video): every comparison runs and
its JSON is consistent, so the benchmark behind docs/BENCHMARKS.md cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lofi.runtime.pipeline import plan

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_benchmark_runs_and_reports_consistently(tmp_path):
    out = tmp_path / "runtime.json"
    args = ["--minutes", "0.1", "--repeats", "1", "--streams", "2", "--work", str(tmp_path)]
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "runtime.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    inf = r["ort_stream_vs_torch_eager_offline"]
    assert inf["speedup"] == round(
        inf["torch_eager_offline_seconds"] / inf["ort_stream_seconds"], 3
    )
    assert inf["same_segments"] is True
    assert inf["stages"]["decode"]["frames"] == 48  # 6 s at 8 fps
    st = r["streams_in_one_process_vs_sequential"]
    par = st["one_process_parallel"]["seconds"]
    assert st["throughput_ratio"] == round(st["sequential"]["seconds"] / par, 3)
    assert st["one_process_parallel_one_call"]["encoder_batch"]["size"] == 4
    assert st["one_process_parallel"]["encoder_batch"]["size"] == plan("cpu", 2).encoder_batch
    assert 0 < st["sequential"]["cores_busy"] <= r["machine"]["cores"] + 0.5
    mem = r["peak_rss"]
    assert mem["10x"]["video_seconds"] == 10 * mem["1x"]["video_seconds"] == 60.0
    assert mem["ratio"] == round(mem["10x"]["peak_rss_mib"] / mem["1x"]["peak_rss_mib"], 3)
    assert r["plan"] == vars(plan("cpu", 1))
    assert set(r["encoder_ms_per_snippet_by_batch"]) == {f"batch={b}" for b in (2, 4, 8, 16, 32)}
    assert r["acceptance"]["rss_10x_le_1.1x"] == (mem["ratio"] <= 1.1)


def test_the_parallel_sweep_runs_every_mix_beside_the_sequential_run(tmp_path):
    out = tmp_path / "sweep.json"
    args = ["--sweep", "--minutes", "0.1", "--repeats", "1", "--streams", "2"]
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "runtime.py"), *args, "--work", str(tmp_path)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    sweep, cores = r["sweep"], r["machine"]["cores"]
    mixes = {f"decoder_threads={d},workers={w}" for d in (1, 2) for w in {2, 4, max(1, cores - 2)}}
    assert set(sweep) == {"sequential", "plan"} | mixes
    assert sweep["sequential"]["throughput_vs_sequential"] == 1.0
    assert all(side["seconds"] > 0 and side["cores_busy"] > 0 for side in sweep.values())
