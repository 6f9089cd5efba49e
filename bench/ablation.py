"""The paper's Tables 1 and 2 in miniature on Synth-TAL: pre-training and LoFi configurations,
each followed by the same frozen-encoder head stage, over several seeds.

Rows: no pre-training (random encoder, the closest Synth-TAL has to ICP), ACP, ACP+, LoFi S, T,
ST, short cycle, long cycle, and full-fidelity end to end, with the pyramid head; ACP and long
cycle again with the G-TAD head (`/gtad`, resize protocol). Each seed renders its own Synth-TAL
and initialises its own models. Every stage runs with --resume, and each finished row leaves a
result.json, so an interrupted ablation continues where it stopped.

    python bench/ablation.py --out bench/results/ablation --seeds 0 1 2
    python bench/ablation.py --preset tiny --out /tmp/abl --seeds 0   # a minute, a smoke test
    python bench/ablation.py --out bench/results/ablation --report    # tables of finished rows
    python bench/ablation.py --out bench/results/ablation --report --seeds 0 1 2   # those only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from importlib.resources import files
from pathlib import Path

import torch
from lofi.trainer.checkpoint import build_encoder, save_checkpoint
from lofi.trainer.config import load_config
from lofi.trainer.data import prepare_cache
from lofi.trainer.fidelity import FidelitySchedule
from lofi.trainer.planner import measure_step
from lofi.trainer.schema import Config
from lofi.trainer.stages import run_stage
from lofi.trainer.synth import SynthConfig, generate

ROWS = (
    "none",
    "ACP",
    "ACP+",
    "S",
    "T",
    "ST",
    "short_cycle",
    "long_cycle",
    "full",
    "ACP/gtad",
    "long_cycle/gtad",
)
# G-TAD on Synth-TAL: the resize protocol (64 snippets over each video), CPU-sized widths
GTAD = [
    "model.head=gtad",
    "data.mode=resize",
    "data.window=64",
    "model.gtad.dim=64",
    "model.gtad.groups=8",
    "model.gtad.map_dim=64",
    "model.gtad.hidden_2d=32",
    "model.gtad.samples=8",
    "postprocess.score_threshold=0.001",
]
LOFI_ROWS = ("S", "T", "ST", "short_cycle", "long_cycle", "full")
PRESETS = {
    # the demo's benchmark and schedule
    "full": {"synth": {}, "overrides": []},
    "tiny": {
        "synth": dict(
            train_videos=3,
            val_videos=2,
            classes=4,
            clip_classes=4,
            clips_per_class=4,
            height=32,
            width=32,
            min_duration=12,
            max_duration=16,
        ),
        "overrides": [
            "pretrain.epochs=1",
            "lofi.epochs=1",
            "head.epochs=2",
            "model.width=8",
            "model.head_dim=16",
            "pretrain.batch_size=4",
        ],
    },
}
TIOUS_SHOWN = {"0.5": 0, "0.75": 5, "0.95": 9}


def prepare(seed_dir: Path, synth: SynthConfig) -> list[str]:
    syn = seed_dir / "synth"
    if not (syn / "clip_cache" / "index.json").is_file():
        generate(syn, synth)
        size = (synth.height, synth.width)
        prepare_cache(syn / "annotations.json", syn / "videos", syn / "cache", synth.fps, size)
        prepare_cache(syn / "clips.json", syn / "clips", syn / "clip_cache", synth.fps, size)
    return [
        f"data.annotations={syn / 'annotations.json'}",
        f"data.cache={syn / 'cache'}",
        f"data.clips={syn / 'clips.json'}",
        f"data.clip_cache={syn / 'clip_cache'}",
    ]


def random_encoder(cfg: Config, path: Path) -> Path:
    """A checkpoint of a randomly initialised encoder: the no-pre-training row."""
    if not path.is_file():
        torch.manual_seed(cfg.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        enc = build_encoder(cfg, pretrained=False)
        payload = {"stage": "pretrain", "config": cfg.to_dict(), "encoder": enc.state_dict()}
        save_checkpoint(path, payload)
    return path


def activation_bytes(cfg: Config, row: str, size: tuple[int, int]) -> int | None:
    """Peak activations of one training step of the row's encoder training (None: frozen)."""
    sched = FidelitySchedule()
    if row in ("none",):
        return None
    if row in ("ACP", "ACP+"):
        return None  # classification steps are single snippets; not the memory in question
    names = {"short_cycle": ("S", "T", "ST"), "long_cycle": ("S", "T", "ST")}.get(row, (row,))
    return max(measure_step(cfg, size, sched.configs()[n]).activations for n in names)


def run_row(name: str, seed_dir: Path, base: list[str], extra: list[str]) -> dict:
    out = seed_dir / name.replace("/", "-")
    result = out / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    row, _, head_type = name.partition("/")
    cfg_path = str(files("lofi.configs") / "demo.yaml")
    head_options = GTAD if head_type == "gtad" else []

    def cfg(*more: str) -> Config:
        return load_config(cfg_path, [*base, *extra, *head_options, *more])

    t0 = time.perf_counter()
    acp = seed_dir / "ACP" / "pretrain" / "checkpoint.pt"
    if row != "none":  # shared by every row of the seed (the encoder does not see the head)
        run_stage("pretrain", load_config(cfg_path, [*base, *extra]), acp.parent, resume=True)
    if row == "none":
        init = random_encoder(cfg(), out / "random" / "checkpoint.pt")
    elif row == "ACP":
        init = acp
    elif row == "ACP+":
        init = run_stage(
            "pretrain",
            cfg("pretrain.source=segments", f"pretrain.init={acp}"),
            out / "plus",
            resume=True,
        )
    else:
        init = run_stage(
            "lofi", cfg(f"lofi.schedule={row}", f"lofi.init={acp}"), out / "lofi", resume=True
        )
    head_ckpt = run_stage("head", cfg(f"head.init={init}"), out / "head", resume=True)
    metrics = json.loads((head_ckpt.parent / "metrics.json").read_text())["validation"]
    c = cfg()
    size = tuple(
        json.loads((Path(c.data.cache) / "index.json").read_text())[k] for k in ("height", "width")
    )
    res = {
        "row": name,
        "mAP": metrics["mAP"],
        "tiou": metrics["tiou"],
        "average_mAP": metrics["average_mAP"],
        "per_class": metrics.get("per_class"),
        "activation_bytes": activation_bytes(c, row, size),
        "wall_s": time.perf_counter() - t0,
    }
    result.write_text(json.dumps(res, indent=1))
    return res


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def t95(df: int) -> float:
    """Two-sided 95 % Student t quantile: the table, then the Cornish-Fisher expansion around
    the normal's 1.96 (within 0.004 of the exact value from 9 degrees of freedom on)."""
    if df in T95:
        return T95[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width of a paired difference (Student t)."""
    n = len(diffs)
    mean = statistics.mean(diffs)
    if n < 2:
        return mean, math.inf
    return mean, t95(n - 1) * statistics.stdev(diffs) / math.sqrt(n)


def summarise(results: dict[int, dict[str, dict]]) -> dict:
    table = {}
    for row in ROWS:
        runs = [r[row] for r in results.values() if row in r]
        if not runs:
            continue
        cols = {name: [100 * x["mAP"][i] for x in runs] for name, i in TIOUS_SHOWN.items()}
        cols["avg"] = [100 * x["average_mAP"] for x in runs]
        table[row] = {
            "n": len(runs),
            **{k: (statistics.mean(v), statistics.pstdev(v)) for k, v in cols.items()},
            "activation_MiB": (runs[0]["activation_bytes"] or 0) / 2**20,
            "wall_s": statistics.mean(x["wall_s"] for x in runs),
        }
    out: dict = {"table": table, "paired_avg_mAP": {}}
    for row in ROWS:
        base = baseline(row)
        diffs = [
            100 * (r[row]["average_mAP"] - r[base]["average_mAP"])
            for r in results.values()
            if row in r and base in r and row != base
        ]
        if diffs:
            mean, half = t_interval(diffs)
            out["paired_avg_mAP"][f"{row} - {base}"] = {"diffs": diffs, "mean": mean, "ci95": half}
    return out


def baseline(row: str) -> str:
    """What a row is compared with: ACP with the same head."""
    return "ACP/gtad" if row.endswith("/gtad") else "ACP"


def markdown(results: dict[int, dict[str, dict]], summary: dict) -> str:
    """The BENCHMARKS tables: rows with mean ± std, paired differences, per-class APs."""
    lines = [
        "| row | seeds | mAP@0.5 | 0.75 | 0.95 | avg | rotate cw / ccw AP (avg) "
        "| activations / step (MiB) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_class: dict[str, dict[str, float]] = {}
    for row, t in summary["table"].items():
        runs = [r[row] for r in results.values() if row in r]
        classes = runs[0]["per_class"]
        per_class[row] = {
            c: statistics.mean(100 * statistics.mean(x["per_class"][c]) for x in runs)
            for c in classes
        }
        cells = [f"{t[k][0]:.1f} ± {t[k][1]:.1f}" for k in (*TIOUS_SHOWN, "avg")]
        cells[-1] = f"**{cells[-1]}**"
        act = f"{t['activation_MiB']:.0f}" if t["activation_MiB"] else "-"
        v = per_class[row]
        pair = f"{v['rotate_cw']:.1f} / {v['rotate_ccw']:.1f}" if "rotate_ccw" in v else "-"
        lines.append(
            f"| {row} | {t['n']} | {' | '.join(cells)} | {pair} | {act} | {t['wall_s']:.0f} |"
        )
    lines.append("")
    for name, d in summary["paired_avg_mAP"].items():
        diffs = ", ".join(f"{x:+.2f}" for x in d["diffs"])
        lines.append(f"- {name}: [{diffs}], mean {d['mean']:+.2f} ± {d['ci95']:.2f} (95 % t)")
    lines.append("")
    classes = list(next(iter(per_class.values())))
    lines.append("| row | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---|" * len(classes))
    for row, v in per_class.items():
        lines.append(f"| {row} | " + " | ".join(f"{v[c]:.1f}" for c in classes) + " |")
    return "\n".join(lines)


def load_results(out: Path) -> dict[int, dict[str, dict]]:
    """Every finished row's result.json under `out` (seed folders), for --report."""
    results: dict[int, dict[str, dict]] = {}
    for seed_dir in sorted(out.glob("seed*")):
        rows = {}
        for row in ROWS:
            f = seed_dir / row.replace("/", "-") / "result.json"
            if f.is_file():
                rows[row] = json.loads(f.read_text())
        if rows:
            results[int(seed_dir.name[4:])] = rows
    return results


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary["table"])
    means = [summary["table"][r]["avg"][0] for r in rows]
    stds = [summary["table"][r]["avg"][1] for r in rows]
    colours = ["#dd8452" if r.endswith("/gtad") else "#4c72b0" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(rows, means, yerr=stds, capsize=4, color=colours)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_ylabel("average mAP (%)")
    ax.set_title("Synth-TAL ablation (mean and std over seeds; orange: G-TAD head)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/ablation"))
    ap.add_argument(
        "--seeds", type=int, nargs="+", help="default: 0 1 2 (with --report: every seed found)"
    )
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--preset", default="full", choices=list(PRESETS))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides")
    ap.add_argument(
        "--report",
        action="store_true",
        help="train nothing: summarise the finished rows under --out (JSON, chart, tables)",
    )
    args = ap.parse_args()
    if args.report:
        results = load_results(args.out)
        if args.seeds:
            results = {seed: rows for seed, rows in results.items() if seed in args.seeds}
        if not results:
            raise SystemExit(f"error: {args.out}: no seed*/ROW/result.json to report")
        write_summary(results, args.out)
        return
    preset = PRESETS[args.preset]
    results: dict[int, dict[str, dict]] = {}
    for seed in args.seeds or [0, 1, 2]:
        seed_dir = args.out / f"seed{seed}"
        base = prepare(seed_dir, SynthConfig(seed=seed, **preset["synth"]))
        extra = [*preset["overrides"], *args.overrides, f"seed={seed}"]
        results[seed] = {}
        for row in args.rows:
            t = time.perf_counter()
            results[seed][row] = run_row(row, seed_dir, base, extra)
            print(
                f"seed {seed} {row:12} avg mAP {100 * results[seed][row]['average_mAP']:.2f} "
                f"({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
    write_summary(results, args.out)


def write_summary(results: dict[int, dict[str, dict]], out: Path) -> None:
    """summary.json, ablation.png and the markdown tables (printed)."""
    summary = summarise(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out / "ablation.png")
    print(markdown(results, summary))


if __name__ == "__main__":
    main()
