"""bench/ablation.py at toy size: rows run, the summary pairs seeds, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path) -> subprocess.CompletedProcess:
    args = ["--preset", "tiny", "--out", str(out), "--seeds", "0", "1"]
    args += ["--rows", "none", "ACP", "long_cycle"]
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ablation.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def _bench_module():
    """bench/ablation.py imported (bench/ is scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import ablation
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return ablation


def test_ablation_rows_summary_and_resume(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["table"]) == {"none", "ACP", "long_cycle"}
    assert summary["table"]["long_cycle"]["n"] == 2
    assert summary["table"]["long_cycle"]["activation_MiB"] > 0
    assert summary["table"]["ACP"]["activation_MiB"] == 0  # no end-to-end step to measure
    pair = summary["paired_avg_mAP"]["long_cycle - ACP"]
    assert len(pair["diffs"]) == 2
    seeds = [
        json.loads((tmp_path / f"seed{s}" / r / "result.json").read_text())
        for s in (0, 1)
        for r in ("long_cycle", "ACP")
    ]
    want = [100 * (seeds[i]["average_mAP"] - seeds[i + 1]["average_mAP"]) for i in (0, 2)]
    assert pair["diffs"] == pytest.approx(want)
    assert "| long_cycle | 2 |" in first.stdout and "- long_cycle - ACP: [" in first.stdout
    assert (tmp_path / "ablation.png").stat().st_size > 0
    done = tmp_path / "seed1" / "long_cycle" / "result.json"
    stamp = done.stat().st_mtime
    t = time.perf_counter()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert done.stat().st_mtime == stamp  # finished rows are read back, not retrained
    assert time.perf_counter() - t < 60
    (tmp_path / "summary.json").unlink()
    report = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ablation.py"), "--out", str(tmp_path), "--report"],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "| long_cycle | 2 |" in report.stdout and report.stdout in again.stdout


def test_g_tad_rows_have_an_activation_figure():
    ablation = _bench_module()
    from importlib.resources import files

    from lofi.trainer.config import load_config

    cfg = load_config(str(files("lofi.configs") / "demo.yaml"), ablation.GTAD)
    pyramid = load_config(str(files("lofi.configs") / "demo.yaml"), [])
    gtad = ablation.activation_bytes(cfg, "T", (32, 32))
    assert gtad > 0 and gtad != ablation.activation_bytes(pyramid, "T", (32, 32))


def test_t_quantiles_match_the_table_beyond_it():
    ablation = _bench_module()
    exact = {2: 4.303, 8: 2.306, 9: 2.262, 12: 2.179, 20: 2.086, 30: 2.042, 120: 1.980}
    assert {df: ablation.t95(df) for df in exact} == pytest.approx(exact, abs=0.004)
    mean, half = ablation.t_interval([1.0, 2.0, 3.0])
    assert (mean, half) == pytest.approx((2.0, 4.303 / 3**0.5))
