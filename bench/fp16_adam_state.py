"""Why reference and fast numerics part ways: BertAdam's state on CLIP's fp16 weights.

    python bench/fp16_adam_state.py --root data/synthetic [--variant meanP] [--steps 25]

Trains ``--steps`` steps of the paper protocol with ``reference`` numerics (CLIP in fp16, trained in
place, BertAdam without bias correction, as CLIP4Clip does) and prints, over CLIP's fp16 tensors,
the share of entries whose second moment ``next_v`` underflowed to exactly 0 and the share whose
update ratio ``|m| / (sqrt(v) + eps)`` exceeds 10 (Adam's ratio is bounded by about 1 when ``v``
holds the squared gradients; far above it, the fp16 state is amplifying the step). One JSON line
on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from harness.console import Reporter  # noqa: E402
from harness.train import TrainConfig, build_model, build_optimizer_for, resolve_plan, train_step  # noqa: E402
from harness.train.inputs import Batches, epoch_pairs, prepare, step_chunks  # noqa: E402
from harness.train.resources import Resources  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("data/synthetic"))
    p.add_argument("--variant", default="meanP")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    cfg = TrainConfig(variant=args.variant, dataset="synthetic", root=str(args.root), protocol="paper",
                      numerics="reference", seed=args.seed, device=args.device, progress=False,
                      tracking_root="runs/fp16-adam-state")
    plan = resolve_plan(cfg)
    preset = plan.preset
    with Reporter(enabled=False) as reporter:
        run = prepare(plan, reporter, Resources())
    torch.manual_seed(plan.seed)
    model = build_model(plan.spec, run.backbone, protocol=plan.protocol, numerics=plan.numerics,
                        num_frames=preset.max_frames, device=plan.device, emulate_gpus=preset.emulate_gpus)
    pairs = epoch_pairs(run.inputs, preset.expand_sentences, plan.seed, 0)
    steps_per_epoch = len(pairs) // preset.batch_size
    optimizer, scheduler = build_optimizer_for(
        model, kind=plan.optimizer, protocol=plan.protocol, lr=preset.lr, coef_lr=preset.coef_lr,
        weight_decay=preset.weight_decay, warmup=preset.warmup_proportion, max_grad_norm=preset.max_grad_norm,
        t_total=steps_per_epoch * preset.epochs)
    batches = Batches(plan, run.inputs, None)
    chunks = step_chunks(pairs, preset.batch_size, steps_per_epoch)[:args.steps]
    for batch in batches.iterate(chunks):
        train_step(model, model, optimizer, scheduler, batch, 1.0)
    batches.close()
    entries = zero_v = amplified = 0
    for param in model.parameters():
        state = optimizer.state.get(param)
        if not state or param.dtype != torch.float16:
            continue
        m, v = state["next_m"].float(), state["next_v"].float()
        entries += v.numel()
        zero_v += int((v == 0).sum())
        amplified += int(((m / (v.sqrt() + 1e-6)).abs() > 10).sum())
    print(json.dumps({"variant": args.variant, "steps": len(chunks), "fp16_entries": entries,
                      "next_v_zero_share": round(zero_v / max(entries, 1), 4),
                      "update_ratio_gt_10_share": round(amplified / max(entries, 1), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
