"""A whole paper-protocol epoch from a frame cache on disk, with evaluation, against the step-only
rate (issue 13: the data path must never be the bottleneck; target >= 90 %).

    python bench/bench_epoch.py [--small] [--steps 40] [--variant meanP] [--numerics fast]

1. Fabricates a frame cache of ``steps x batch`` training videos plus ``--test`` test videos of
   random uint8 frames in the real on-disk format (224 px, 12 frames; 32 px with ``--small``).
2. Step-only: ``train_step`` on one batch already on the device, ``--steps`` times.
3. Epoch: the engine's own ``train_one_epoch`` over the same number of steps, fed by ``Batches``
   (cache reads into reused pinned buffers in a prefetch thread, uint8 to the device, normalised
   there), then ``score`` on the test videos (CLIP encodes every frame and text).
Reports the time per step of both, the ratio step-only/epoch (evaluation excluded and included),
and the same ratio extrapolated to an MSR-VTT epoch (1,406 steps, one 1,000-video evaluation).
Imports neither MLflow, Optuna nor PyAV (the GPU machine has none of them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_data import fabricate_cache  # noqa: E402

from harness.backbone import TINY_CLIP, load_clip  # noqa: E402
from harness.console import Reporter  # noqa: E402
from harness.data.frames import FrameSettings  # noqa: E402
from harness.data.records import VideoRecord  # noqa: E402
from harness.presets import get_preset  # noqa: E402
from harness.train import Numerics, Optimizer, Protocol, TrainConfig, build_model, build_optimizer_for  # noqa: E402
from harness.train.evaluation import score  # noqa: E402
from harness.train.inputs import Batches, TrainInputs  # noqa: E402
from harness.train.loop import _Progress, train_one_epoch, train_step  # noqa: E402
from harness.train.plan import RunPlan  # noqa: E402
from variants import parse_variant_name  # noqa: E402


MSRVTT_STEPS = 1406


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny CLIP, 32 px, batch 8 (CPU)")
    p.add_argument("--variant", default="meanP")
    p.add_argument("--numerics", choices=[Numerics.FAST.value, Numerics.REFERENCE.value], default="fast")
    p.add_argument("--steps", type=int, default=None, help="steps timed (default 40; small 6)")
    p.add_argument("--test", type=int, default=None, help="test videos scored (default 1000; small 64)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
                          else args.device)
    batch, size = (8, 32) if args.small else (128, 224)
    steps = args.steps or (6 if args.small else 40)
    n_test = args.test or (64 if args.small else 1000)
    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP if args.small else "ViT-B-32-quickgelu", None, allow_random=True)
    settings = FrameSettings(12, image_size=size)
    n_train = steps * batch
    with tempfile.TemporaryDirectory() as tmp:
        cache = fabricate_cache(Path(tmp), settings, n_train + n_test)
        ids = [f"video{i}" for i in range(n_train + n_test)]
        caption = "a person is cooking something in a kitchen and talking"
        train = [VideoRecord(v, Path(v), (f"{caption} {i}",)) for i, v in enumerate(ids[:n_train])]
        test_ids = ids[n_train:]
        inputs = TrainInputs(train, test_ids, [f"{caption} {i}" for i in range(n_test)], list(range(n_test)),
                             cache, {}, {}, [() for _ in test_ids])
        numerics = Numerics(args.numerics)
        preset = dataclasses.replace(get_preset("msrvtt"), batch_size=batch, emulate_gpus=1,
                                     expand_sentences=False)
        plan = RunPlan(TrainConfig(variant=args.variant, dataset="msrvtt", root=tmp, device=str(device),
                                   progress=False, max_nonfinite_steps=10**6),
                       preset, parse_variant_name(args.variant), (), device, Protocol.PAPER, numerics,
                       Optimizer.BERTADAM if numerics is Numerics.REFERENCE else Optimizer.ADAMW,
                       clip.model_name, None, Path(tmp), 16 if numerics is Numerics.REFERENCE else 250)
        model = build_model(plan.spec, clip.to(device), protocol=Protocol.PAPER, numerics=numerics,
                            num_frames=12, device=device)
        opt, sched = build_optimizer_for(model, kind=plan.optimizer, protocol=Protocol.PAPER, lr=1e-4,
                                         coef_lr=1e-3, weight_decay=0.2, warmup=0.1, max_grad_norm=1.0,
                                         t_total=steps * 2, fused=device.type == "cuda" and numerics == "fast")
        batches = Batches(plan, inputs, None)
        fixed = next(batches.iterate([[(v, t) for v, t in
                                       ((r.video_id, r.texts[0]) for r in train[:batch])]]))
        for _ in range(2):  # warm-up (allocator, kernels)
            train_step(model, model, opt, sched, fixed, 1.0)
        _sync(device)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step(model, model, opt, sched, fixed, 1.0)
            _sync(device)
            times.append(time.perf_counter() - t0)
        step_only = statistics.median(times)
        with Reporter(enabled=False) as rep:
            task = rep.add("steps", steps)
            _sync(device)
            t0 = time.perf_counter()
            train_one_epoch(model, model, opt, sched, plan, inputs, batches, 0, steps, rep, task, Path(tmp),
                            _Progress())
            _sync(device)
            epoch_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            scores = score(model, plan, inputs, None, rep)
            _sync(device)
            eval_s = time.perf_counter() - t1
        batches.close()
    row = {"variant": args.variant, "numerics": args.numerics, "device": str(device), "batch": batch,
           "image_size": size, "steps": steps, "test_videos": n_test,
           "step_only_s": round(step_only, 4), "epoch_s_per_step": round(epoch_s / steps, 4),
           "epoch_vs_step_only": round(step_only * steps / epoch_s, 3),
           "eval_s": round(eval_s, 2),
           "epoch_with_eval_vs_step_only": round(step_only * steps / (epoch_s + eval_s), 3),
           # an MSR-VTT epoch is 1,406 steps of 128 with one 1k-A evaluation
           "msrvtt_epoch_with_eval_vs_step_only": round(
               step_only * MSRVTT_STEPS / (epoch_s / steps * MSRVTT_STEPS + eval_s * 1000 / n_test), 3),
           "t2v_R1_random": scores.metrics["t2v"]["R1"]}
    print(json.dumps(row) if args.json else "\n".join(f"{k}: {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
