"""`lofi-demo --small` runs the whole pipeline and writes its report."""

import json
import subprocess
import sys
from pathlib import Path


def test_demo_small(tmp_path):
    # the console script installed beside this interpreter (the venv need not be activated)
    exe = Path(sys.executable).parent / "lofi-demo"
    assert exe.is_file(), "lofi-demo is not installed (pip install -e .)"
    p = subprocess.run(
        [exe, "--out", str(tmp_path), "--small"], capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "LoFi stream" in p.stdout and "baseline" in p.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parity"]["ok"]
    # streaming and whole-video inference of the same bundle give the same mAP, per class too
    assert report["stream"]["events"] > 0 and report["model"]["mAP"][0] > 0
    assert report["model"] == report["bundle_offline"]
    assert (tmp_path / "bundle" / "manifest.json").is_file() and (
        tmp_path / "timeline.png"
    ).is_file()
