"""bench/ablation.py at toy size: rows run, the summary pairs seeds, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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


def test_ablation_rows_summary_and_resume(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["table"]) == {"none", "ACP", "long_cycle"}
    assert summary["table"]["long_cycle"]["n"] == 2
    assert summary["table"]["long_cycle"]["activation_MiB"] > 0
    assert summary["table"]["ACP"]["activation_MiB"] == 0  # no end-to-end step to measure
    pair = summary["long_minus_ACP_avg_mAP"]
    assert len(pair["diffs"]) == 2
    assert (tmp_path / "ablation.png").stat().st_size > 0
    done = tmp_path / "seed1" / "long_cycle" / "result.json"
    stamp = done.stat().st_mtime
    t = time.perf_counter()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert done.stat().st_mtime == stamp  # finished rows are read back, not retrained
    assert time.perf_counter() - t < 60
