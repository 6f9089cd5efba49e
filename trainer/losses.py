"""Label assignment with centre sampling, sigmoid focal loss and 1D DIoU loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def assign(
    segments: torch.Tensor,
    strides: list[int],
    lengths: list[int],
    num_classes: int,
    radius: float = 1.5,
    ranges: list[tuple[float, float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for all positions of all levels of one window.

    segments: (n, 3) [start, end, class] in snippet coordinates of the window.
    Returns cls targets (P, C) and regression targets (P, 2) in units of each level's stride
    (rows of negatives are zero). A position is positive for the shortest instance that contains
    it, lies within `radius` strides of its centre, and whose reach fits the level's range.
    """
    if ranges is None:
        ranges = [(0.0, 4.0)] + [(2.0 ** (i + 1), 2.0 ** (i + 2)) for i in range(1, len(strides))]
        ranges[-1] = (ranges[-1][0], float("inf"))
    centres, strides_t, lo, hi = [], [], [], []
    for s, n, (a, b) in zip(strides, lengths, ranges):
        centres.append(torch.arange(n, dtype=torch.float32) * s + (s - 1) / 2)
        strides_t.append(torch.full((n,), float(s)))
        lo.append(torch.full((n,), a))
        hi.append(torch.full((n,), b))
    p, st, lo, hi = (torch.cat(t) for t in (centres, strides_t, lo, hi))
    cls_t = torch.zeros(len(p), num_classes)
    reg_t = torch.zeros(len(p), 2)
    if len(segments) == 0:
        return cls_t, reg_t
    start, end, label = segments[:, 0], segments[:, 1], segments[:, 2].long()
    ds = p[:, None] - start[None]
    de = end[None] - p[:, None]
    centre = (start + end) / 2
    cs = torch.maximum(centre[None] - radius * st[:, None], start[None])
    ce = torch.minimum(centre[None] + radius * st[:, None], end[None])
    inside = (p[:, None] >= cs) & (p[:, None] <= ce) & (ds > 0) & (de > 0)
    reach = torch.maximum(ds, de)
    ok = inside & (reach >= lo[:, None]) & (reach < hi[:, None])
    length = torch.where(ok, (end - start)[None].expand_as(ok), torch.full_like(ds, float("inf")))
    best_len, best = length.min(dim=1)
    pos = torch.isfinite(best_len)
    idx = torch.nonzero(pos).squeeze(1)
    cls_t[idx, label[best[idx]]] = 1.0
    reg_t[idx, 0] = ds[idx, best[idx]] / st[idx]
    reg_t[idx, 1] = de[idx, best[idx]] / st[idx]
    return cls_t, reg_t


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """pred/target (n, 2) distances to start and end from the same point."""
    ps, pe = pred[:, 0], pred[:, 1]
    ts, te = target[:, 0], target[:, 1]
    inter = torch.minimum(ps, ts) + torch.minimum(pe, te)
    union = (ps + pe) + (ts + te) - inter
    iou = inter / union.clamp(min=eps)
    enclose = torch.maximum(ps, ts) + torch.maximum(pe, te)
    centre_dist = ((pe - ps) - (te - ts)) / 2
    return 1 - iou + (centre_dist / enclose.clamp(min=eps)) ** 2


def _masks(valid: torch.Tensor, strides: list[int]) -> torch.Tensor:
    """(B, P) real-position mask over all levels, from (B, L) real-snippet flags."""
    length = valid.shape[1]
    return torch.cat([valid[:, ::s][:, : length // s] for s in strides], dim=1)


def count_positives(
    targets: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor, strides: list[int]
) -> float:
    """Positive positions of a batch: the loss normaliser, computable before any forward pass,
    so micro-batches and processes can share the global batch's value."""
    cls_t = torch.stack([t[0] for t in targets])
    return float(((cls_t.sum(-1) > 0) & _masks(valid, strides)).sum())


def detection_loss(
    outputs: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[tuple[torch.Tensor, torch.Tensor]],
    valid: torch.Tensor,
    strides: list[int],
    normaliser: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """outputs: per level (B, C, n), (B, 2, n); targets per sample (cls (P, C), reg (P, 2));
    valid (B, L) marks real (not padded) snippets. The sums are divided by `normaliser`
    (default: this batch's positives, at least 1)."""
    cls = torch.cat([c.permute(0, 2, 1) for c, _ in outputs], dim=1)
    reg = torch.cat([r.permute(0, 2, 1) for _, r in outputs], dim=1)
    masks = _masks(valid, strides)[:, : cls.shape[1]]
    cls_t = torch.stack([t[0] for t in targets]).to(cls.device)
    reg_t = torch.stack([t[1] for t in targets]).to(cls.device)
    pos = (cls_t.sum(-1) > 0) & masks
    n_pos = max(1.0, float(pos.sum()) if normaliser is None else normaliser)
    cls, reg = cls.float(), reg.float()
    l_cls = sigmoid_focal_loss(cls[masks], cls_t[masks]).sum() / n_pos
    l_reg = diou_loss_1d(reg[pos], reg_t[pos]).sum() / n_pos if pos.any() else reg.sum() * 0
    return l_cls + l_reg, {"loss_cls": l_cls.item(), "loss_reg": l_reg.item()}
