"""Timeline plot of ground truth against predictions (matplotlib, imported only when asked).

Video ids and class labels come from the user's files: they are drawn as text, never markup.
matplotlib would read `$...$` as mathtext (a malformed one raises at draw time) and, with a
user's `text.usetex`, hand the text to LaTeX; `text_only` turns both off for every text of a
plot, and `plain` escapes control characters and cuts a long id to a short prefix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lofi.runtime.annotations import GroundTruth, Segment
from lofi.runtime.errors import LofiError

LABEL_CHARS = 60  # characters of an id or label drawn before it is cut


def plain(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` as a plot shows it: unprintable characters escaped (`\\n`, `\\x1b`), at most
    `limit` characters (a cut one ends in `...`)."""
    shown = "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text[: limit + 1]  # pragma: no mutate (any cut past `limit` draws the same)
    )
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display), or one line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LofiError("plotting needs matplotlib: pip install matplotlib") from None
    return plt


@contextlib.contextmanager
def text_only() -> Iterator[None]:
    """Texts created and drawn inside are plain text: no mathtext, no LaTeX."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def plot_timelines(
    gt: GroundTruth, predictions: list[Segment], out: Path, videos: int = 6, min_score: float = 0.3
) -> None:
    plt = pyplot()
    with text_only():
        _draw(plt, gt, predictions, out, videos, min_score)


def _draw(
    plt: Any, gt: GroundTruth, predictions: list[Segment], out: Path, videos: int, min_score: float
) -> None:
    labels = gt.labels
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    vids = list(gt.videos)[:videos]
    fig, axes = plt.subplots(len(vids), 1, figsize=(11, 1.3 * len(vids) + 0.6), squeeze=False)
    for ax, vid in zip(axes[:, 0], vids):
        info = gt.videos[vid]
        for s in info.segments:
            ax.barh(1, s.end - s.start, left=s.start, height=0.8, color=colours[s.label])
        for p in predictions:
            if p.video == vid and p.score >= min_score:
                ax.barh(
                    0,
                    p.end - p.start,
                    left=p.start,
                    height=0.8 * p.score,
                    color=colours.get(p.label, "grey"),
                    alpha=0.8,
                )
        ax.set_xlim(0, info.duration)
        ax.set_yticks([0, 1], ["pred", "truth"])
        ax.set_title(plain(vid), fontsize=8, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lab]) for lab in labels]
    names = [plain(lab) for lab in labels]
    fig.legend(handles, names, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    axes[-1, 0].set_xlabel("seconds (prediction bar height = score)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
