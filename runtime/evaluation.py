"""Detection mAP with the ActivityNet protocol: the official evaluation code's matching, tIoU
arithmetic, thresholds and AP (ActivityNet's Eval_detection.py, as ActionFormer uses it)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
from lofi.runtime.annotations import GroundTruth, Segment
from lofi.runtime.errors import LofiError, shown

# The very floats the official code builds (ActivityNet's np.linspace(0.5, 0.95, 10), ActionFormer's
# THUMOS14 np.linspace(0.3, 0.7, 5)): the ninth ActivityNet threshold is 0.8999999999999999 and
# the second THUMOS14 one 0.39999999999999997, and a tIoU that lands on them is a match there
TIOU_PRESETS: dict[str, list[float]] = {
    "anet": [float(t) for t in np.linspace(0.5, 0.95, 10)],
    "thumos": [float(t) for t in np.linspace(0.3, 0.7, 5)],
}


def parse_tiou(spec: str) -> list[float]:
    """A preset name or a comma-separated list of thresholds in (0, 1]."""
    if spec in TIOU_PRESETS:
        return TIOU_PRESETS[spec]
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise LofiError(
            f"--tiou must be 'anet', 'thumos' or numbers like 0.3,0.5: {shown(spec)}"
        ) from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise LofiError(f"tIoU thresholds must lie in (0, 1]: {shown(spec)}")
    return values


def segment_iou(seg: np.ndarray, others: np.ndarray) -> np.ndarray:
    """tIoU of one [start, end] against an (N, 2) array, in the official code's arithmetic (no
    floor on the union: a floor moves the tIoU of segments shorter than it). The union is at
    least the longer segment's length, and ground truth and NMS input have positive length."""
    inter = (np.minimum(seg[1], others[:, 1]) - np.maximum(seg[0], others[:, 0])).clip(0)
    union = (others[:, 1] - others[:, 0]) + (seg[1] - seg[0]) - inter
    return inter / union


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP: precision made non-increasing from the right (VOC 2011)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _touches(seg: np.ndarray, spans: np.ndarray | None) -> bool:
    """Whether [start, end] overlaps any of the (N, 2) spans by more than nothing."""
    if spans is None or not len(spans):
        return False
    return bool(np.any(np.minimum(seg[1], spans[:, 1]) > np.maximum(seg[0], spans[:, 0])))


def average_precision(
    gts: list[Segment],
    preds: list[Segment],
    tious: list[float],
    ambiguous: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """AP of one class at each threshold. Predictions are ranked by score and each takes the
    unmatched ground truth of its video with the highest tIoU >= threshold; ties in either are
    broken as the official ActivityNet code breaks them (`argsort()[::-1]`, numpy's default
    sort, over the predictions in file order and the video's ground truth in file order), so
    even a tie that decides a match gives the official AP.
    A prediction left unmatched that overlaps one of its video's `ambiguous` spans is ignored
    (neither a true nor a false positive), as THUMOS14's official evaluation does."""
    ap = np.zeros(len(tious))
    if not gts or not preds:
        return ap
    ambiguous = ambiguous or {}
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(gts):
        by_video[g.video].append(i)
    gt_arr = np.array([[g.start, g.end] for g in gts])
    order = np.argsort(np.array([p.score for p in preds]))[::-1]
    tp = np.zeros((len(tious), len(preds)))
    fp = np.zeros((len(tious), len(preds)))
    locked = np.full((len(tious), len(gts)), False)
    for rank, pi in enumerate(order):
        p = preds[pi]
        cand = by_video.get(p.video)
        miss = 0 if _touches(np.array([p.start, p.end]), ambiguous.get(p.video)) else 1
        if not cand:
            fp[:, rank] = miss
            continue
        ious = segment_iou(np.array([p.start, p.end]), gt_arr[cand])
        by_iou = np.argsort(ious)[::-1]
        for t, thr in enumerate(tious):
            for j in by_iou:
                if ious[j] < thr:
                    break
                g = cand[j]
                if locked[t, g]:
                    continue
                locked[t, g] = True
                tp[t, rank] = 1
                break
            if not tp[t, rank]:
                fp[t, rank] = miss
    for t in range(len(tious)):
        counted = (tp[t] + fp[t]) > 0  # ignored predictions leave the ranking
        tp_c = np.cumsum(tp[t, counted])
        fp_c = np.cumsum(fp[t, counted])
        if len(tp_c):
            ap[t] = interpolated_ap(tp_c / (tp_c + fp_c), tp_c / len(gts))
    return ap


@dataclass
class MapReport:
    tiou: list[float]
    mAP: list[float]
    average_mAP: float
    per_class: dict[str, list[float]]

    def class_table(self) -> str:
        """Per-class AP (%) at each threshold and averaged, one class per line."""
        width = max([len(c) for c in self.per_class] + [5])
        head = "  ".join(f"{t:>6.2f}" for t in self.tiou)
        lines = [f"{'class':<{width}}  {head}     avg"]
        for label, aps in self.per_class.items():
            vals = "  ".join(f"{100 * a:6.2f}" for a in aps)
            lines.append(f"{label:<{width}}  {vals}  {100 * sum(aps) / len(aps):6.2f}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "tiou": self.tiou,
            "mAP": self.mAP,
            "average_mAP": self.average_mAP,
            "per_class": self.per_class,
        }

    def table(self, title: str = "") -> str:
        """The columns the field reports: THUMOS14 every threshold 0.3..0.7, ActivityNet 0.5,
        0.75 and 0.95 of its ten; other lists in full; then the average over all of them."""
        cols = list(range(len(self.tiou)))
        if self.tiou == TIOU_PRESETS["anet"]:
            cols = [0, 5, 9]
        head = "  ".join(f"{self.tiou[c]:>6.2f}" for c in cols)
        vals = "  ".join(f"{100 * self.mAP[c]:6.2f}" for c in cols)
        name = f"{title:<12}" if title else ""
        pad = " " * len(name)
        return f"{pad}mAP@ {head}     avg\n{name}     {vals}  {100 * self.average_mAP:6.2f}"


def evaluate(gt: GroundTruth, predictions: list[Segment], tious: list[float]) -> MapReport:
    """mAP over the classes with ground truth in `gt`, as the official code computes it.
    Predictions on videos outside it count as false positives; predictions of a known class with
    no instance here have no AP to count in; a label the annotation file does not know is an error,
    and so is a non-finite score or bound, or an end before the start (each would move its
    class's AP without a word). A zero-length prediction is a false positive (tIoU 0), as in the
    official code. Ground truth with no segment at all (an unannotated subset) is an error: it
    has no mAP, and printing 0 would read as a result.
    Unmatched predictions overlapping a video's ambiguous spans are ignored (THUMOS14).
    Copies of ActivityNet name their files `v_<id>.mp4` while the annotation file says `<id>`:
    a prediction for `v_<id>` counts for `<id>` when only that one is annotated.
    """
    predictions = [
        replace(p, video=p.video[2:])
        if p.video not in gt.videos and p.video.startswith("v_") and p.video[2:] in gt.videos
        else p
        for p in predictions
    ]
    for p in predictions:
        if not all(np.isfinite((p.score, p.start, p.end))):
            raise LofiError(
                f"prediction for video {shown(p.video)} ({shown(p.label)}) has a non-finite score "
                f"or segment: score {p.score}, segment [{p.start}, {p.end}]"
            )
        if p.end < p.start:
            raise LofiError(
                f"prediction for video {shown(p.video)} ({shown(p.label)}) ends before it starts: "
                f"segment [{p.start}, {p.end}]"
            )
    unknown = sorted({p.label for p in predictions} - set(gt.labels))
    if unknown:
        raise LofiError(f"predicted label(s) unknown to the ground truth: {', '.join(unknown)}")
    gts_by: dict[str, list[Segment]] = defaultdict(list)
    for s in gt.segments():
        gts_by[s.label].append(s)
    if not gts_by:
        subsets = ", ".join(sorted({shown(info.subset) for info in gt.videos.values()}))
        raise LofiError(
            f"the ground truth has no segment to evaluate against in its {len(gt.videos)} "
            f"video(s) (subset {subsets or 'none'}): no mAP to report"
        )
    preds_by: dict[str, list[Segment]] = defaultdict(list)
    for p in predictions:
        preds_by[p.label].append(p)
    ambiguous = {
        v: np.array(info.ambiguous, dtype=float)  # (n, 2): the reader keeps pairs
        for v, info in gt.videos.items()
        if info.ambiguous
    }
    per_class = {
        lab: average_precision(gts_by[lab], preds_by[lab], tious, ambiguous)
        for lab in gt.labels
        if gts_by[lab]
    }
    mean = np.mean(np.stack(list(per_class.values())), axis=0)
    return MapReport(
        tiou=list(tious),
        mAP=[float(x) for x in mean],
        average_mAP=float(mean.mean()),
        per_class={k: [float(x) for x in v] for k, v in per_class.items()},
    )
