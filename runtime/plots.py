"""Timeline plot of ground truth against predictions (matplotlib, imported only when asked)."""

from __future__ import annotations

from pathlib import Path

from lofi.runtime.annotations import GroundTruth, Segment
from lofi.runtime.errors import LofiError


def plot_timelines(
    gt: GroundTruth, predictions: list[Segment], out: Path, videos: int = 6, min_score: float = 0.3
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LofiError("plotting needs matplotlib: pip install matplotlib") from None
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
        ax.set_title(vid, fontsize=8, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lab]) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    axes[-1, 0].set_xlabel("seconds (prediction bar height = score)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
