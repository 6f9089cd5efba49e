"""Video ids and class labels are drawn as text, never markup: `$...$` is not mathtext (a
malformed one would raise at draw time), a user's `text.usetex` does not hand them to LaTeX,
control characters are escaped and a long id is cut; lofi-eval --plot and the training curves
both hold to it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo
from lofi.runtime.plots import LABEL_CHARS, plain, plot_timelines
from lofi.trainer.plots import plot_curves
from matplotlib.text import Text

# `$\\frac{$` is malformed mathtext (raises at draw time), `a$b$c` well-formed (drawn as math)
HOSTILE = [
    "a$b$c",
    "$\\frac{$",
    "$\\frac{",
    "\\n",
    "$x^2$ and $",
    "line\nbreak\x1b[31m",
    "L" * 5000,
]


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plot functions close (so a test can look at their texts)."""
    figures: list = []
    close = plt.close

    def keep(fig=None):
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return figures


def texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_text()]


def assert_plain(fig, wanted: list[str]) -> None:
    shown = texts(fig)
    for t in shown:
        assert not t.get_usetex() and not t.get_parse_math(), t.get_text()
        assert (
            len(t.get_text()) <= LABEL_CHARS
            and "\n" not in t.get_text()
            and "\x1b" not in t.get_text()
        )
    assert set(wanted) <= {t.get_text() for t in shown}


def hostile_ground_truth() -> tuple[GroundTruth, list[Segment]]:
    videos, preds = {}, []
    for i, vid in enumerate(HOSTILE):
        label = HOSTILE[-1 - i]
        videos[vid] = VideoInfo("validation", 10.0, [Segment(vid, label, 1.0, 4.0)])
        preds.append(Segment(vid, label, 1.5, 4.5, 0.9))
    return GroundTruth(videos, list(dict.fromkeys(HOSTILE[::-1]))), preds


def test_timeline_ids_and_labels_are_text_not_markup(tmp_path, drawn, monkeypatch):
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)  # a user's matplotlibrc
    gt, preds = hostile_ground_truth()
    plot_timelines(gt, preds, tmp_path / "t.png", videos=len(HOSTILE))
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert_plain(drawn[0], [plain(v) for v in HOSTILE])
    assert "a$b$c" in {t.get_text() for t in texts(drawn[0])}
    assert matplotlib.rcParams["text.usetex"]  # the user's setting is left as it was


def test_plain_escapes_and_cuts():
    assert plain("a$b$c") == "a$b$c"
    assert plain("line\nbreak\x1b[31m") == "line\\nbreak\\x1b[31m"
    cut = plain("L" * 5000)
    assert len(cut) == LABEL_CHARS and cut.endswith("...")
    assert plain("L" * LABEL_CHARS) == "L" * LABEL_CHARS


def test_curves_draw_metric_names_and_title_as_text(tmp_path, drawn, monkeypatch):
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)
    epochs = [{"epoch": e, "loss": 1.0 / (e + 1), "$\\frac{$": 0.5, "a$b$c": e} for e in range(3)]
    plot_curves(epochs, tmp_path / "c.png", "run $\\frac{$")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert_plain(drawn[0], ["$\\frac{$", "a$b$c", "run $\\frac{$"])


def test_lofi_eval_plot_with_hostile_ids_is_written(tmp_path):
    gt, preds = hostile_ground_truth()
    db = {
        v: {"subset": "validation", "duration": 10.0, "annotations": [
            {"segment": [s.start, s.end], "label": s.label} for s in info.segments]}
        for v, info in gt.videos.items()
    }  # fmt: skip
    results = {
        p.video: [{"segment": [p.start, p.end], "label": p.label, "score": p.score}] for p in preds
    }
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    (tmp_path / "r.json").write_text(json.dumps({"results": results}))
    code = "import sys; from lofi.runtime.cli import eval_cli; sys.argv = sys.argv[1:]; eval_cli()"
    args = ["lofi-eval", "--ground-truth", str(tmp_path / "gt.json"), "--predictions",
            str(tmp_path / "r.json"), "--plot", str(tmp_path / "t.png")]  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert Path(tmp_path / "t.png").stat().st_size > 1000
