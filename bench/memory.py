"""Training-step memory of every LoFi fidelity and memory option, measured and planned.

1. Measured on this machine at the demo's shapes (configs/demo.yaml, 64x64 frames): a real
   training step on the CPU counted by `MemoryMeter` (and saved-tensor hooks), next to the
   planner's FakeTensorMode trace of the same step.
2. Planned at the paper's setting (TSM-ResNet18, batch 16, L = 100 snippets, k = 8, 224^2, SGD
   momentum 0): each fidelity x checkpointing x precision, and what fits 24 GB and 80 GB GPUs.
3. On a GPU (`--device cuda`): torch.cuda.max_memory_allocated of real steps of TSM-R18 at
   224^2 against the planner, per configuration.

    python bench/memory.py --out bench/results/memory.json
    python bench/memory.py --device cuda --out bench/results/memory-cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib.resources import files
from pathlib import Path

import torch
from lofi.trainer.config import load_config
from lofi.trainer.encoder import freeze_batch_norm
from lofi.trainer.head_kinds import head_kind
from lofi.trainer.planner import CHECKPOINTING, GIB, fidelities, measure_step, surrogate_loss
from lofi.trainer.schema import Config

CONFIGS = Path(str(files("lofi.configs")))
PAPER = ["data.window=100", "lofi.batch_size=16", "data.k=8"]
BUDGETS = {"24GB": 24e9, "80GB": 80e9}


def rows(cfg: Config, size: tuple[int, int], real: bool) -> list[dict]:
    out = []
    for fid in fidelities(cfg):
        for ckpt in CHECKPOINTING:
            for prec in ("fp32", "bf16"):
                plan = measure_step(cfg, size, fid, ckpt, prec, fake=True)
                row = {"plan": plan.as_json()}
                if real:
                    row["measured"] = measure_step(cfg, size, fid, ckpt, prec, fake=False).as_json()
                out.append(row)
    base = out[0]["plan"]["activations"]
    for r in out:
        r["ratio_to_full_fp32"] = r["plan"]["activations"] / base
    return out


def gpu_rows(cfg: Config, size: tuple[int, int]) -> list[dict]:
    """Peak CUDA memory of real steps; the planner's activations + weights for comparison."""
    from lofi.trainer.checkpoint import build_encoder, build_head

    out = []
    for fid in fidelities(cfg):
        for ckpt in CHECKPOINTING:
            for prec in ("fp32", "bf16"):
                plan = measure_step(cfg, size, fid, ckpt, prec, fake=True)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                enc = build_encoder(cfg, pretrained=False).cuda().train()
                head = build_head(cfg, enc.out_dim, 20).cuda().train()
                enc.set_memory(ckpt)
                if cfg.lofi.freeze_bn:
                    freeze_batch_norm(enc)
                before = torch.cuda.memory_allocated()
                dtype = {"fp32": None, "bf16": torch.bfloat16}[prec]
                h, w = fid.size(*size)
                n = max(1, cfg.data.window // fid.r_t)
                x = torch.randn(
                    cfg.lofi.batch_size,
                    n,
                    cfg.data.k,
                    3,
                    h,
                    w,
                    device="cuda",
                    dtype=dtype or torch.float32,
                )
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=bool(dtype)):
                    loss = surrogate_loss(head_kind(head, cfg), enc(x))
                del x
                loss.backward()
                peak = torch.cuda.max_memory_allocated() - before
                predicted = plan.activations + plan.weight_casts + plan.grads
                out.append(
                    {
                        "fidelity": fid.name,
                        "checkpointing": ckpt,
                        "precision": prec,
                        "cuda_peak_bytes": peak,
                        "planned_bytes": predicted,
                        "planner_error": (predicted - peak) / peak,
                    }
                )
                del enc, head, loss
    return out


def fits(plans: list[dict]) -> dict:
    result = {}
    for name, budget in BUDGETS.items():
        result[name] = [
            {k: p["plan"][k] for k in ("fidelity", "checkpointing", "precision", "total")}
            for p in plans
            if p["plan"]["total"] <= budget
        ]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    result: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    demo = load_config(CONFIGS / "demo.yaml", [])
    paper = load_config(CONFIGS / "tsm_r18_anet.yaml", PAPER)
    if args.device == "cpu":
        result["demo_measured"] = rows(demo, (64, 64), real=True)
        result["paper_planned"] = rows(paper, (224, 224), real=False)
        result["paper_fits"] = fits(result["paper_planned"])
        print_tables(result)
    else:
        result["device"] = torch.cuda.get_device_name()
        # frozen batch norm, as chunked checkpointing needs it
        overrides = ["lofi.batch_size=2", "data.k=8", "lofi.freeze_bn=true"]
        gpu = load_config(CONFIGS / "tsm_r18_anet.yaml", overrides)
        result["cuda_vs_planner"] = gpu_rows(gpu, (224, 224))
        for r in result["cuda_vs_planner"]:
            print(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


def print_tables(result: dict) -> None:
    print("demo shapes (batch 2 x 64 snippets x 4 frames x 64^2, tiny TSM width 24), MiB:")
    print("| fidelity | checkpointing | precision | measured | planned | ratio to full fp32 |")
    print("|---|---|---|---|---|---|")
    for r in result["demo_measured"]:
        p, m = r["plan"], r["measured"]
        print(
            f"| {p['fidelity']} | {p['checkpointing']} | {p['precision']} | "
            f"{m['activations'] / 2**20:.1f} | {p['activations'] / 2**20:.1f} | "
            f"{r['ratio_to_full_fp32']:.2f} |"
        )
    print("\npaper setting (TSM-R18, batch 16 x L snippets x 8 frames), GiB:")
    print("| fidelity | input | checkpointing | precision | activations | total | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in result["paper_planned"]:
        p = r["plan"]
        print(
            f"| {p['fidelity']} | {p['snippets']}x{p['side'][0]}^2 | {p['checkpointing']} | "
            f"{p['precision']} | {p['activations'] / GIB:.1f} | {p['total'] / GIB:.1f} | "
            f"{r['ratio_to_full_fp32']:.2f} |"
        )
    for name, ok in result["paper_fits"].items():
        shown = ", ".join(f"{f['fidelity']}/{f['checkpointing']}/{f['precision']}" for f in ok)
        print(f"fits {name}: {shown or 'nothing'}")


if __name__ == "__main__":
    main()
