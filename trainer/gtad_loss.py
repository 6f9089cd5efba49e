"""G-TAD's loss, tem + 10 * pem_reg + pem_cls (BMN's), plus the per-snippet class loss.

Targets live on the head's resize grid, in snippet coordinates (position i = snippet i's
centre); map entry (d, s) is the proposal [s, s + d + 1] (`lofi.runtime.gtad_decode`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from lofi.runtime.gtad_decode import proposal_map
from lofi.trainer.gtad import GTADOutputs

BOUNDARY_REGION = 3.0  # snippets: width of the region around a boundary that counts as it


class GTADTargets(NamedTuple):
    """One video: start/end match scores (T,), IoU map (D, T) (0 where invalid), soft
    per-snippet class targets (T, K) (rows of zeros outside every action)."""

    start: torch.Tensor
    end: torch.Tensor
    iou: torch.Tensor
    classes: torch.Tensor


def _ioa(pos: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Best overlap of each position's unit anchor [i - 0.5, i + 0.5] with the boundary regions
    around `centres` (BMN's match score)."""
    half = BOUNDARY_REGION / 2
    lo = torch.maximum(pos[:, None] - 0.5, centres[None] - half)
    hi = torch.minimum(pos[:, None] + 0.5, centres[None] + half)
    return (hi - lo).clamp(min=0).amax(1)


def gtad_targets(
    segments: torch.Tensor, length: int, max_duration: int, num_classes: int
) -> GTADTargets:
    """segments (n, 3) [start, end, class] in snippet units of the resize grid (clipped to the
    grid) -> targets for a head with T = `length`, D = `max_duration`."""
    pos = torch.arange(length, dtype=torch.float32)
    classes = torch.zeros(length, num_classes)
    if len(segments) == 0:
        zeros = torch.zeros(length)
        return GTADTargets(zeros, zeros.clone(), torch.zeros(max_duration, length), classes)
    start = segments[:, 0].float().clamp(0, length - 1)
    end = segments[:, 1].float().clamp(0, length - 1)
    ps, pe, valid = (torch.from_numpy(a.copy()) for a in proposal_map(length, max_duration))
    ps, pe = ps.float()[..., None], pe.float()[..., None]
    inter = (torch.minimum(pe, end) - torch.maximum(ps, start)).clamp(min=0)
    iou = inter / (pe - ps + end - start - inter)
    iou = iou.amax(-1) * valid
    # a snippet belongs to each action whose span holds its centre; an action shorter than a
    # snippet still claims the snippet nearest its middle
    nearest = ((start + end) / 2).round()
    inside = ((pos[:, None] >= start) & (pos[:, None] <= end)) | (pos[:, None] == nearest)
    classes.index_add_(1, segments[:, 2].long(), inside.float())
    classes = classes / classes.sum(1, keepdim=True).clamp(min=1)
    return GTADTargets(_ioa(pos, start), _ioa(pos, end), iou, classes)


def balanced_bce(logits: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BMN's weighted binary logistic loss: positives and negatives (within `mask`) each carry
    half the total weight, so rare boundaries / high-IoU proposals are not drowned out."""
    n = mask.sum()
    n_pos = (positive & mask).sum()
    w = torch.where(positive, 0.5 * n / n_pos.clamp(min=1), 0.5 * n / (n - n_pos).clamp(min=1))
    bce = F.binary_cross_entropy_with_logits(logits, positive.float(), reduction="none")
    return (w * mask * bce).sum() / n.clamp(min=1)


def pem_reg_loss(logits: torch.Tensor, iou: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L2 between sigmoid(logits) and the IoU on all high-IoU (> 0.7) entries and as many
    medium (0.3, 0.7] and low (<= 0.3, zeros included: short actions leave most proposals at 0)
    entries, sampled at random."""
    high = (iou > 0.7) & valid
    mid = (iou > 0.3) & (iou <= 0.7) & valid
    low = (iou <= 0.3) & valid
    n_high = high.sum()
    keep = high.clone()
    for group in (mid, low):
        keep |= group & (torch.rand_like(iou) < n_high / group.sum().clamp(min=1))
    err = (torch.sigmoid(logits) - iou) ** 2
    return 0.5 * (err * keep).sum() / keep.sum().clamp(min=1)


def gtad_loss(
    outputs: GTADOutputs, targets: list[GTADTargets]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch loss and its parts. TEM and PEM terms are normalised over the whole batch, as in
    G-TAD; the class loss is a soft-target cross entropy over the snippets inside actions."""
    start, end, conf, cls = (o.float() for o in outputs)
    t = GTADTargets(*(torch.stack(x).to(start.device) for x in zip(*targets)))
    length, max_duration = conf.shape[-1], conf.shape[-2]
    valid = torch.from_numpy(proposal_map(length, max_duration)[2].copy()).to(start.device)
    valid = valid.expand_as(t.iou)
    every = torch.ones_like(t.start, dtype=torch.bool)
    tem = balanced_bce(start, t.start > 0.5, every) + balanced_bce(end, t.end > 0.5, every)
    reg = pem_reg_loss(conf[:, 0], t.iou, valid)
    pem_cls = balanced_bce(conf[:, 1], t.iou > 0.9, valid)
    inside = t.classes.sum(-1) > 0
    logits = cls.transpose(1, 2)[inside]
    cls_loss = F.cross_entropy(logits, t.classes[inside]) if inside.any() else cls.sum() * 0
    loss = tem + 10 * reg + pem_cls + cls_loss
    parts = {
        "loss_tem": tem.item(),
        "loss_pem_reg": reg.item(),
        "loss_pem_cls": pem_cls.item(),
        "loss_cls": cls_loss.item(),
    }
    return loss, parts
