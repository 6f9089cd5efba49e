"""G-TAD head: shapes, SGAlign against a naive sample-then-conv oracle, hand-checked targets
and loss, overfitting one video then decoding it, ONNX parity, torch-free decoding."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from lofi.runtime.evaluation import segment_iou
from lofi.runtime.gtad_decode import boundary_candidates, gtad_detect
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid, resize_grid
from lofi.trainer.gtad import ExportableGTAD, GCNeXt, GTADHead, GTADOutputs, knn, neighbours
from lofi.trainer.gtad_loss import gtad_loss, gtad_targets, pem_reg_loss

from tests.test_torch_free import BLOCK

T, D, C, K = 16, 15, 8, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box OpenMP waits make a
    2-thread step ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_head(seed: int = 0) -> GTADHead:
    torch.manual_seed(seed)
    return GTADHead(
        C, K, length=T, dim=16, groups=4, width_group=2, samples=4, map_dim=16, hidden_2d=8
    )


def test_shapes_and_probabilities():
    head = tiny_head()
    out = head(torch.randn(2, C, T))
    assert [tuple(o.shape) for o in out] == [(2, T), (2, T), (2, 2, D, T), (2, K, T)]
    start, end, conf, probs = ExportableGTAD(head)(torch.randn(2, C, T))
    assert all(((p >= 0) & (p <= 1)).all() for p in (start, end, conf, probs))
    assert torch.allclose(probs.sum(1), torch.ones(2, T))


def test_shorter_input_is_resized_to_the_grid():
    """T-LoFi: T / 4 snippets spanning the same video give the outputs of their linear
    interpolation onto the T grid (first and last snippet centres coincide)."""
    head = tiny_head().eval()
    short = torch.randn(1, C, T // 4)
    pos = torch.linspace(0, T // 4 - 1, T)  # T-grid positions in short-grid snippets
    left = pos.floor().long().clamp(max=T // 4 - 2)
    frac = pos - left
    resized = short[..., left] * (1 - frac) + short[..., left + 1] * frac
    with torch.no_grad():
        for a, b in zip(head(short), head(resized)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_knn_graph_by_hand():
    x = torch.tensor([[[0.0, 1.0, 10.0, 11.5, 12.0]]])  # one channel: points on a line
    idx = knn(x, 2)
    assert [sorted(r) for r in idx[0].tolist()] == [[0, 1], [0, 1], [2, 3], [3, 4], [3, 4]]
    assert neighbours(x, idx)[0, 0].tolist() == x[0, 0, idx[0]].tolist()


def test_gcnext_sees_temporal_and_feature_space_neighbours():
    """Output at snippet 0 depends on snippet 1 (temporal stream) and on snippet 10, its
    nearest neighbour in feature space (semantic stream), but not on snippet 7 (neither)."""
    torch.manual_seed(0)
    block = GCNeXt(16, k=2, groups=4, width_group=2)
    x = 3 * torch.randn(1, 16, T)
    x[0, :, 10] = x[0, :, 0] + 0.01
    with torch.no_grad():
        base = block(x)[0, :, 0]
        for j, depends in ((1, True), (10, True), (7, False)):
            y = x.clone()
            y[0, :, j] += 0.05
            assert torch.equal(knn(y, 2)[0, 0].sort().values, torch.tensor([0, 10]))
            assert (not torch.equal(block(y)[0, :, 0], base)) == depends, j


def test_sgalign_equals_sampling_then_1x1_conv():
    """The fused SGAlign equals G-TAD's: sample 2C x N features per proposal by linear
    interpolation (zero outside the video) over the proposal widened by half its length on each
    side, then a 1x1 conv; the taps are written out here independently of the head."""
    head = tiny_head()
    align = head.align
    x = torch.randn(1, 16, T)
    with torch.no_grad():
        got = align(x)[0].numpy()
        z = torch.cat([x, neighbours(x, knn(x, 3)).mean(-1)], 1)[0].numpy()  # (2C, T)
        w = align.proj.weight[:, :, 0].numpy().reshape(align.samples, align.out_dim, -1)
        bias = align.bias.numpy()
    n_pts = align.samples
    want = np.zeros_like(got)
    for d in range(D):
        for s in range(T):
            a, b = s - 0.5 * (d + 1), s + d + 1 + 0.5 * (d + 1)
            pts = a + (np.arange(n_pts) + 0.5) / n_pts * (b - a)
            hat = np.clip(1 - np.abs(pts[:, None] - np.arange(T)[None]), 0, None)  # (N, T)
            feats = z @ hat.T  # (2C, N)
            want[:, d, s] = np.einsum("nok,kn->o", w, feats) + bias
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_targets_by_hand():
    t = gtad_targets(torch.tensor([[2.0, 5.0, 1.0]]), 8, 7, 3)
    # the map entry of the exact segment: start 2, duration 3 (d = 2)
    assert t.iou[2, 2] == 1.0
    assert t.iou[1, 2] == pytest.approx(2 / 3)  # [2, 4] vs [2, 5]
    assert t.iou[2, 0] == pytest.approx(1 / 5)  # [0, 3] vs [2, 5]
    assert t.iou[6, 1] == 0.0  # [1, 8] runs past the last snippet: invalid
    assert int((t.iou == 1).sum()) == 1
    # boundary regions 3 snippets wide: positions 1..3 hold the start, 4..6 the end
    assert t.start.tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert t.end.tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    # a boundary between snippets: the match score is the overlap of [i - 0.5, i + 0.5]
    starts = gtad_targets(torch.tensor([[2.3, 5.0, 1.0]]), 8, 7, 3).start
    assert torch.allclose(starts, torch.tensor([0, 0.7, 1, 1, 0.3, 0, 0, 0]))
    assert t.classes[:, 1].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert t.classes[:, [0, 2]].sum() == 0
    # overlapping actions share their snippets; one shorter than a snippet still claims one
    t = gtad_targets(torch.tensor([[1.0, 4.0, 0.0], [3.0, 6.0, 2.0], [6.6, 6.9, 1.0]]), 8, 7, 3)
    assert t.classes[3].tolist() == [0.5, 0.0, 0.5]
    assert t.classes[1].tolist() == [1.0, 0.0, 0.0]
    assert t.classes[7].tolist() == [0.0, 1.0, 0.0]


def test_loss_weights_by_hand():
    """With every logit at 2, a binary term is (softplus(-2) + softplus(2)) / 2 whatever the
    class balance, only if positives and negatives each carry half the weight; the class term
    is log K; invalid map entries get no gradient."""
    targets = [
        gtad_targets(torch.tensor([[3.3, 9.0, 1.0]]), T, D, K),  # match 0.3 at snippet 5
        gtad_targets(torch.tensor([[0.0, 4.0, 2.0], [10.0, 15.5, 0.0]]), T, D, K),
    ]
    shapes = [(2, T), (2, T), (2, 2, D, T), (2, K, T)]
    outputs = GTADOutputs(*(torch.full(s, 2.0, requires_grad=True) for s in shapes))
    torch.manual_seed(0)
    loss, parts = gtad_loss(outputs, targets)
    half = float(torch.nn.functional.softplus(torch.tensor([-2.0, 2.0])).mean())
    assert parts["loss_tem"] == pytest.approx(2 * half, rel=1e-5)
    assert parts["loss_pem_cls"] == pytest.approx(half, rel=1e-5)
    assert parts["loss_cls"] == pytest.approx(np.log(K), rel=1e-5)
    total = (
        parts["loss_tem"] + 10 * parts["loss_pem_reg"] + parts["loss_pem_cls"] + parts["loss_cls"]
    )
    assert loss.item() == pytest.approx(total, rel=1e-5)
    loss.backward()
    invalid = torch.arange(T)[None] + torch.arange(1, D + 1)[:, None] > T - 1
    grad = outputs.confidence.grad.abs()
    assert grad[:, :, invalid].sum() == 0 and (grad[:, 1, ~invalid] > 0).all()
    # logits of +-2 on the right side of G-TAD's thresholds (boundary match > 0.5, IoU > 0.9):
    # every binary entry then costs softplus(-2)
    start, end, iou = (torch.stack(x) for x in list(zip(*targets))[:3])
    sign = lambda positive: torch.where(positive, 2.0, -2.0)
    conf = torch.stack([torch.zeros_like(iou), sign(iou > 0.9)], 1)
    right = GTADOutputs(sign(start > 0.5), sign(end > 0.5), conf, outputs.classes.detach())
    _, parts = gtad_loss(right, targets)
    low = float(torch.nn.functional.softplus(torch.tensor(-2.0)))
    assert parts["loss_tem"] == pytest.approx(2 * low, rel=1e-5)
    assert parts["loss_pem_cls"] == pytest.approx(low, rel=1e-5)


def test_pem_reg_samples_as_many_low_as_high():
    """50 entries at IoU 0.8 predicted exactly, 5000 at IoU 0 predicted 0.5: keeping all high
    and ~50 low gives 0.5 * 0.25 * 50 / 100; without sampling it would be ~0.124, without the
    zero-IoU entries 0."""
    iou = torch.zeros(5050)
    iou[:50] = 0.8
    logits = torch.zeros(5050)
    logits[:50] = torch.logit(torch.tensor(0.8))
    torch.manual_seed(0)
    losses = [
        float(pem_reg_loss(logits, iou, torch.ones(5050, dtype=torch.bool))) for _ in range(20)
    ]
    assert 0.055 < np.mean(losses) < 0.07


def test_overfit_one_video_then_decode():
    grid = resize_grid(fps=8.0, k=4, frame_stride=1, n_frames=96, length=T)  # a 12 s video
    gt = (3.3, 7.2)  # snippets 3.98 to 9.07: the best map entry, [4, 9], has IoU 0.98 > 0.9
    seg = torch.tensor([[float(grid.index(gt[0])), float(grid.index(gt[1])), 1.0]])
    targets = [gtad_targets(seg, T, D, K)]
    head = tiny_head()
    torch.manual_seed(1)
    x = torch.randn(1, C, T)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss, _ = gtad_loss(head(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses
    head.eval()
    with torch.no_grad():
        outs = [o[0].numpy() for o in ExportableGTAD(head)(x)]
    segs = gtad_detect(outs, grid, 12.0, ["a", "b", "c"], PostConfig(score_threshold=0.0), "v")
    best = segs[0]
    assert best.label == "b"
    assert segment_iou(np.array(gt), np.array([[best.start, best.end]]))[0] > 0.7


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_matches_pytorch(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    model = ExportableGTAD(tiny_head()).eval()
    path = tmp_path / "gtad.onnx"
    example = torch.randn(2, C, T)
    kwargs = (
        {"dynamic_shapes": {"features": {0: torch.export.Dim("batch")}}}
        if dynamo
        else {"dynamic_axes": {n: {0: "batch"} for n in ["features", *ExportableGTAD.output_names]}}
    )
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["features"],
        output_names=ExportableGTAD.output_names,
        opset_version=18 if dynamo else 17,
        dynamo=dynamo,
        **kwargs,
    )
    x = torch.randn(3, C, T)  # another batch size: the batch axis stays dynamic
    with torch.no_grad():
        want = [o.numpy() for o in model(x)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": x.numpy()})
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-4


def hand_outputs() -> tuple[list[np.ndarray], SnippetGrid]:
    """T = 8: a start peak at snippet 2, an end peak at 5, a confident map entry for [2, 5] and
    class 1 likelier inside it; snippet i is at (3 i + 1) / 2 seconds."""
    start = np.array([0.1, 0.2, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1])
    end = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1])
    conf = np.full((2, 7, 8), 0.5)
    conf[:, 2, 2] = [0.9, 0.8]
    probs = np.full((2, 8), 0.5)
    probs[:, 2:6] = [[0.25], [0.75]]
    return [start, end, conf, probs], SnippetGrid(fps=2.0, k=2, frame_stride=1, hop=3.0)


def test_boundary_candidates_by_hand():
    """Peaks (4: a low one), anything above half the maximum (6: no peak), and the edge."""
    p = np.array([0.1, 0.2, 0.9, 0.2, 0.3, 0.2, 0.5, 0.6, 0.2, 0.1])
    assert np.flatnonzero(boundary_candidates(p, 0)).tolist() == [0, 2, 4, 6, 7]
    assert np.flatnonzero(boundary_candidates(p, -1)).tolist() == [2, 4, 6, 7, 9]


def test_decode_by_hand():
    outs, grid = hand_outputs()
    segs = gtad_detect(outs, grid, 12.0, ["a", "b"], PostConfig(score_threshold=0.001), "v")
    best = segs[0]
    assert (best.video, best.label, best.start, best.end) == ("v", "b", 3.5, 8.0)
    assert best.score == pytest.approx(0.9 * 0.8 * 0.9 * 0.8 * 0.75)
    # boundaries are the peaks plus the video's edges: starts {0, 2}, ends {5, 7} -> 4 proposals,
    # all labelled b; soft-NMS decays the runner-up, [2, 7] (IoU 0.6 with the best), and drops
    # [0, 7] below min_score
    assert len(segs) == 3 and {s.label for s in segs} == {"b"}
    assert (segs[1].start, segs[1].end) == (3.5, 11.0)
    assert segs[1].score == pytest.approx(0.9 * 0.1 * 0.25 * (4 / 6) * np.exp(-(0.6**2) / 0.5))


def test_decode_is_torch_free():
    outs, _ = hand_outputs()
    code = (
        BLOCK
        + f"""
import json
import numpy as np
from lofi.runtime.gtad_decode import boundary_candidates, gtad_detect
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid
outs = [np.array(a) for a in {json.dumps([o.tolist() for o in outs])}]
segs = gtad_detect(outs, SnippetGrid(2.0, 2, 1, 3.0), 12.0, ["a", "b"], PostConfig(score_threshold=0.001), "v")
assert "torch" not in sys.modules
print(json.dumps([[s.label, s.start, s.end, s.score] for s in segs]))
"""
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got[0][:3] == ["b", 3.5, 8.0] and len(got) == 3
