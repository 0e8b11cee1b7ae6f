"""Training/evaluation benchmark of the engine (issue 4).

    python bench/bench_train.py                 # full MSR-VTT shape (use a GPU)
    python bench/bench_train.py --small         # CPU-sized shape with the tiny CLIP
    python bench/bench_train.py --small --write-doc   # also replace the "Training" section numbers

1. One paper-protocol training step (forward, backward, global clip, optimiser, clamp) at the
   MSR-VTT shape: 128 videos x 12 frames at 224 px, 32 words, ViT-B/32 architecture with random
   weights, for meanP / seqTransf / tightTransf, with ``--numerics reference`` (CLIP4Clip's fp16
   weights + BertAdam) and ``fast`` (bf16 autocast + fp32 master weights + fused AdamW on CUDA)
   side by side. Inputs are already on the device (the data path is bench_data.py's job).
2. One frozen-protocol epoch on MSR-VTT-sized random features: 9,000 videos x 12 x 512,
   180,000 (video, caption) pairs, 1,406 steps of 128 (only the head trains).
3. 1k-A evaluation: 1,000 videos x 12 frames encoded by CLIP, 1,000 texts, the similarity
   matrix (through the cross encoder for tightTransf) and all metrics.

``--small``: tiny CLIP (32 px, width 64), batch 8; frozen: 200 videos / 4,000 pairs in batches
of 32, 20 steps timed and extrapolated to the epoch; 100-video eval.
Imports nothing of MLflow, Optuna or PyAV (the GPU machine has none of them).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.metrics import t2v_v2t
from harness.numerics import autocast
from harness.train import Numerics, Optimizer, Protocol, RetrievalModel, build_model, build_optimizer_for, train_step

VARIANTS = ("meanP", "seqTransf", "tightTransf")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clip(small: bool, device: torch.device) -> Any:
    from harness.backbone import TINY_CLIP, load_clip

    torch.manual_seed(0)
    name = TINY_CLIP if small else "ViT-B-32-quickgelu"
    return load_clip(name, None, allow_random=True).to(device)


def _model(clip: Any, variant: str, frames: int, numerics: str, protocol: str,
           device: torch.device, compile_: bool = False) -> tuple[RetrievalModel, Any, Any]:
    model = build_model(variant, clip, protocol=protocol, numerics=numerics, num_frames=frames,
                        device=device, compile=compile_)
    kind = Optimizer.BERTADAM if Numerics(numerics) is Numerics.REFERENCE else Optimizer.ADAMW
    opt, sched = build_optimizer_for(model, kind=kind, protocol=protocol, lr=1e-4, coef_lr=1e-3,
                                     weight_decay=0.2, warmup=0.1, max_grad_norm=1.0, t_total=1406 * 5,
                                     fused=device.type == "cuda" and numerics == Numerics.FAST)
    return model, opt, sched


def _tokens(n: int, words: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    t = torch.zeros(n, words, dtype=torch.long)
    length = words - 6
    t[:, 0] = 49406
    t[:, 1:length] = torch.randint(300, 40000, (n, length - 1), generator=gen)
    t[:, length] = 49407
    return t.to(device)


def bench_paper_step(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    clip = _clip(args.small, device)
    b, t, s, w = args.batch, args.frames, clip.image_size, args.words
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(b, t, 3, s, s, generator=gen).to(device)
    mask = torch.ones(b, t, device=device)
    tokens = _tokens(b, w, device, gen)
    rows = []
    for variant in args.variants:
        for numerics in args.numerics:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model, opt, sched = _model(clip, variant, t, numerics, Protocol.PAPER, device, args.compile)
            times = []
            try:
                for i in range(args.warmup + args.steps):
                    _sync(device)
                    t0 = time.perf_counter()
                    loss, _ = train_step(model, model, opt, sched, (pixels, mask, tokens), 1.0)
                    _sync(device)
                    if i >= args.warmup:
                        times.append(time.perf_counter() - t0)
                sec = statistics.median(times)
                row = {"bench": "paper step", "variant": variant, "numerics": numerics,
                       "batch": b, "frames": t, "words": w, "s_per_step": round(sec, 4),
                       "videos_per_s": round(b / sec, 1), "loss": round(loss, 4)}
            except torch.OutOfMemoryError:
                row = {"bench": "paper step", "variant": variant, "numerics": numerics,
                       "batch": b, "frames": t, "words": w, "s_per_step": None,
                       "videos_per_s": None, "error": "out of memory"}
            if device.type == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            del model, opt, sched
    return rows


def bench_frozen_epoch(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    d = 64 if args.small else 512
    n_videos, per_video, t, b = args.frozen_videos, 20, args.frames, args.frozen_batch
    gen = torch.Generator().manual_seed(1)
    frames = torch.randn(n_videos, t, d, generator=gen).to(device)
    mask = torch.ones(n_videos, t, device=device)
    text = torch.randn(n_videos * per_video, d, generator=gen).to(device)
    steps_total = n_videos * per_video // b
    steps = min(steps_total, args.frozen_steps) if args.frozen_steps else steps_total
    order = torch.randperm(n_videos * per_video, generator=gen).to(device)
    clip = _clip(True, device) if d == 64 else None
    rows = []
    for variant in args.variants:
        if clip is None:  # heads need text_init shapes of width 512 only; build a ViT-B/32 once
            clip = _clip(False, device)
        model, opt, sched = _model(clip, variant, t, Numerics.FAST, Protocol.FROZEN, device)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            idx = order[i * b:(i + 1) * b]
            vid = idx // per_video
            train_step(model, model, opt, sched, (frames[vid], mask[vid], text[idx]), 1.0)
        _sync(device)
        sec = time.perf_counter() - t0
        row = {"bench": "frozen epoch", "variant": variant, "numerics": Numerics.FAST.value,
               "videos": n_videos, "pairs": n_videos * per_video, "batch": b,
               "steps_per_epoch": steps_total, "steps_timed": steps,
               "s_per_step": round(sec / steps, 5),
               "s_per_epoch": round(sec / steps * steps_total, 2)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


@torch.no_grad()
def bench_eval(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    clip = _clip(args.small, device)
    n, t, s, w = args.eval_videos, args.frames, clip.image_size, args.words
    gen = torch.Generator().manual_seed(2)
    pixels_u8 = torch.randint(0, 256, (n, t, 3, s, s), dtype=torch.uint8, generator=gen)
    tokens = _tokens(n, w, device, gen)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device).view(3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device).view(3, 1, 1)
    rows = []
    for variant in args.variants:
        model, _, _ = _model(clip, variant, t, Numerics.FAST, Protocol.PAPER, device)
        model.eval()
        _sync(device)
        t0 = time.perf_counter()
        with autocast(Numerics.FAST, device):
            feats, vids = [], []
            mask = torch.ones(args.eval_batch, t, device=device)
            for i in range(0, n, args.eval_batch):
                px = pixels_u8[i:i + args.eval_batch].to(device, non_blocking=True)
                px = (px.float().div_(255) - mean) / std
                f = model.clip.encode_frames(px).float()
                m = mask[: len(f)]
                if model.head.loose:
                    vids.append(model.head.encode_video(f, m)[0].float())
                else:
                    feats.append(f)
            txt = torch.cat([model.clip.encode_text(tokens[i:i + 256]).float()
                             for i in range(0, n, 256)])
            if model.head.loose:
                sim = model.head.loose_logits(txt, torch.cat(vids)).float()
            else:
                allf = torch.cat(feats)
                sim = model.head.similarity(txt, allf, torch.ones(n, t, device=device)).float()
        metrics = t2v_v2t(sim.cpu())
        _sync(device)
        sec = time.perf_counter() - t0
        row = {"bench": "eval", "variant": variant, "numerics": Numerics.FAST.value, "videos": n,
               "frames": t, "seconds": round(sec, 2), "videos_per_s": round(n / sec, 1),
               "t2v_R1": metrics["t2v"]["R1"]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del model
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for bench in ("paper step", "frozen epoch", "eval"):
        sel = [r for r in rows if r["bench"] == bench]
        if not sel:
            continue
        keys = [k for k in sel[0] if k not in ("bench",)]
        for r in sel:
            keys += [k for k in r if k not in keys and k != "bench"]
        lines += [f"\n{bench}:\n", "| " + " | ".join(keys) + " |",
                  "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |"
                  for r in sel]
    return "\n".join(lines)


def _machine(device: torch.device) -> str:
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    import os

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}{gpu}")


def _write_doc(text: str) -> None:
    """Replace the measured-numbers block inside the "## Training" section of PERFORMANCE.md."""
    doc = REPO / "docs" / "PERFORMANCE.md"
    body = doc.read_text() if doc.exists() else "# Performance\n"
    start, end = "<!-- bench_train:begin -->", "<!-- bench_train:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    if start in body and end in body:
        body = body[:body.index(start)] + block + body[body.index(end) + len(end):]
    elif "## Training" in body:  # at the end of the section, after its prose
        i = body.index("## Training") + len("## Training")
        j = body.find("\n## ", i)
        j = len(body) if j < 0 else j
        body = body[:j].rstrip() + "\n\n" + block + "\n" + body[j:]
    else:
        body = body.rstrip() + "\n\n## Training\n\n" + block + "\n"
    doc.write_text(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="CPU-sized shape with the tiny CLIP")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--numerics", nargs="+", choices=[Numerics.REFERENCE.value, Numerics.FAST.value],
                   default=[Numerics.REFERENCE.value, Numerics.FAST.value])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5; small 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile the CLIP encoders (fast)")
    p.add_argument("--frozen-steps", type=int, default=0,
                   help="time only this many frozen steps and extrapolate (0 = whole epoch)")
    p.add_argument("--only", nargs="+", choices=("paper", "frozen", "eval"),
                   default=["paper", "frozen", "eval"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--json", action="store_true", help="print all rows as one JSON list on stdout")
    p.add_argument("--write-doc", action="store_true", help="update docs/PERFORMANCE.md (Training)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    args.batch = 8 if args.small else 128
    args.frames = 12
    args.words = 32
    args.steps = args.steps or (3 if args.small else 5)
    args.frozen_videos = 200 if args.small else 9000
    args.frozen_batch = 32 if args.small else 128
    if args.small and not args.frozen_steps:
        args.frozen_steps = 20
    args.eval_videos = 100 if args.small else 1000
    args.eval_batch = 50 if args.small else 250
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if "paper" in args.only:
        rows += bench_paper_step(args, device)
    if "frozen" in args.only:
        rows += bench_frozen_epoch(args, device)
    if "eval" in args.only:
        rows += bench_eval(args, device)
    table = _table(rows)
    cmd = "python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"### {_machine(device)} ({time.strftime('%Y-%m-%d')})\n\nCommand: `{cmd.strip()}`"
              f" — total {time.perf_counter() - t0:.0f} s\n")
    print(header + table, file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
    if args.write_doc:
        _write_doc(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
