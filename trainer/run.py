"""A run folder: checkpoints, metrics.json + metrics.csv, train.log, TensorBoard, curves.png.

Only the main process (rank 0) writes. Progress bars appear only on a terminal; a log file
gets one line per epoch instead of thousands of carriage returns.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError
from lofi.runtime.outputs import PathLike, check_outputs
from lofi.trainer.checkpoint import load_checkpoint, save_checkpoint
from lofi.trainer.plots import plot_curves
from lofi.trainer.schema import Config
from tqdm import tqdm


def bar(items: Iterable, desc: str, total: int | None = None, main: bool = True) -> tqdm:
    """A tqdm bar that draws only on an interactive terminal."""
    return tqdm(items, desc=desc, total=total, leave=False, disable=not (main and _tty()))


def _tty() -> bool:
    return sys.stderr.isatty()


RUN_FILES = {
    "checkpoint": "checkpoint.pt",
    "best checkpoint": "best.pt",
    "log": "train.log",
    "config record": "config.json",
    "metrics": "metrics.json",
    "metrics table": "metrics.csv",
    "curves": "curves.png",
}


def check_run_folder(folder: PathLike, cfg: Config, config_path: PathLike | None) -> None:
    """Before any work: no file the run writes in `folder` may be one of its inputs (the config,
    a stage's init checkpoint, pretrained weights, the annotations), as `lofi.init=runs/x/best.pt
    --run-dir runs/x` would be: the first better epoch overwrote the checkpoint it started from."""
    inputs = [
        ("config", config_path),
        ("pretrain.init checkpoint", cfg.pretrain.init),
        ("lofi.init checkpoint", cfg.lofi.init),
        ("head.init checkpoint", cfg.head.init),
        ("model.weights file", cfg.model.weights),
        ("data.annotations file", cfg.data.annotations),
        ("data.clips file", cfg.data.clips),
    ]
    check_outputs(
        {f"--run-dir's {what}": Path(folder) / name for what, name in RUN_FILES.items()},
        [(what, path) for what, path in inputs if path],
    )


class Run:
    def __init__(self, folder: Path, cfg: Config, stage: str, main: bool = True):
        self.folder = Path(folder)
        self.config = cfg.to_dict()  # as config.json and every checkpoint store it
        self.stage, self.main = stage, main
        self.ckpt_path = self.folder / RUN_FILES["checkpoint"]
        self.best_path = self.folder / RUN_FILES["best checkpoint"]
        self.metrics: dict[str, Any] = {"stage": stage, "epochs": []}
        self.tb = None
        self.log = logging.getLogger(f"lofi.{stage}.{self.folder}")
        if not main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        if not self.log.handlers:
            h = logging.FileHandler(self.folder / RUN_FILES["log"])
            h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(h)
        (self.folder / RUN_FILES["config record"]).write_text(json.dumps(self.config, indent=1))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.folder / "tb"))
        except ImportError:
            pass

    def info(self, message: str) -> None:
        if self.main:
            self.log.info(message)

    def epoch_done(self, epoch: int, values: dict[str, Any]) -> None:
        self.metrics["epochs"].append({"epoch": epoch, **values})
        if not self.main:
            return
        line = json.dumps(values)
        self.log.info("epoch %d %s", epoch, line)
        if not _tty():
            print(f"{self.stage} epoch {epoch + 1}: {line}", file=sys.stderr, flush=True)
        if self.tb:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.stage}/{k}", v, epoch)
        self.write_metrics()

    def write_metrics(self) -> None:
        if not self.main:
            return
        (self.folder / RUN_FILES["metrics"]).write_text(json.dumps(self.metrics, indent=1))
        epochs = self.metrics["epochs"]
        keys = list(dict.fromkeys(k for e in epochs for k in e))
        with open(self.folder / RUN_FILES["metrics table"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(epochs)
        plot_curves(epochs, self.folder / RUN_FILES["curves"], self.stage)

    def save(self, payload: dict[str, Any], best: bool = False) -> None:
        if not self.main:
            return
        payload = {"stage": self.stage, "config": self.config, "metrics": self.metrics, **payload}
        save_checkpoint(self.ckpt_path, payload)
        if best:
            save_checkpoint(self.best_path, payload)

    def resume(self) -> dict | None:
        if not self.ckpt_path.is_file():
            return None
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("stage") != self.stage:
            raise LofiError(
                f"{self.ckpt_path} is a '{ckpt.get('stage')}' checkpoint, not '{self.stage}'"
            )
        if "progress" not in ckpt:
            raise LofiError(f"{self.ckpt_path} was written by an older version; it cannot resume")
        self.metrics = ckpt["metrics"]
        return ckpt

    def close(self) -> None:
        if self.tb:
            self.tb.close()
