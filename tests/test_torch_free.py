"""The runtime imports and streams with torch unavailable (imports of torch are blocked)."""

import subprocess
import sys

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("lofi.trainer") or name.startswith("lofi.export"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def test_runtime_streams_without_torch(tiny_bundle, tiny_synth, tmp_path):
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    code = (
        BLOCK
        + f"""
import lofi.runtime, lofi.runtime.cli
from lofi.runtime.cli import stream_cli
sys.argv = ["lofi-stream", {str(video)!r}, "--bundle", {str(tiny_bundle)!r}, "--results", {str(tmp_path / "r.json")!r}]
try:
    stream_cli()
except SystemExit as e:
    assert not e.code, e.code
assert "torch" not in sys.modules
"""
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r.json").is_file()
