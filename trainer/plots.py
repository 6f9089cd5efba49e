"""Training curves as a PNG next to metrics.json: one panel per numeric metric (loss parts,
validation mAP/accuracy), so a run's health is visible at a glance. Metric names and the title
are drawn as plain text (runtime/plots.py: text_only, plain), never markup."""

from __future__ import annotations

from pathlib import Path

from lofi.runtime.plots import plain, pyplot, text_only


def plot_curves(epochs: list[dict], out: Path, title: str) -> None:
    plt = pyplot()
    keys = [
        k
        for k in dict.fromkeys(k for e in epochs for k in e)
        if k != "epoch" and any(isinstance(e.get(k), (int, float)) for e in epochs)
    ]
    if not keys:
        return
    with text_only():
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
        for ax, key in zip(axes[0], keys):
            pts = [(e["epoch"] + 1, e[key]) for e in epochs if isinstance(e.get(key), (int, float))]
            ax.plot(*zip(*pts), marker="o", ms=3)
            ax.set_title(plain(str(key)), fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
        fig.suptitle(plain(title), fontsize=10)
        fig.tight_layout()
        fig.savefig(out, dpi=90)
        plt.close(fig)
