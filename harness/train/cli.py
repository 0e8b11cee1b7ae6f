"""`eabench train` and `eabench eval`: thin wrappers over ``harness.train``.

Results go to stdout (one JSON object with ``--json``, else a table); progress and logs go to
stderr.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.distributed import cleanup, dist_info
from harness.errors import ConfigError
from harness.presets import parse_assignment
from harness.train.config import Numerics, Optimizer, Protocol, TrainConfig
from harness.train.dryrun import describe_run
from harness.train.evaluation import evaluate
from harness.train.loop import run_training
from harness.train.result import TrainResult, result_json
from harness.train.schema import METRICS

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train and evaluate one variant (one MLflow run)")
    p.add_argument("--variant", default=None, help="registered variant name, e.g. meanP_E4 "
                   "(required unless --resume)")
    p.add_argument("--dataset", default="synthetic",
                   help="dataset preset: msrvtt, didemo, activitynet, synthetic")
    p.add_argument("--root", type=Path, default=None,
                   help="folder with the annotation files (required unless --resume)")
    p.add_argument("--videos", type=Path, default=None, help="folder with the videos (default: under --root)")
    p.add_argument("--protocol", choices=[x.value for x in Protocol], default=Protocol.PAPER.value,
                   help="paper: full fine-tuning; frozen: cached CLIP features, only the head trains")
    p.add_argument("--backbone", default=None, help="CLIP architecture (default: the preset's)")
    p.add_argument("--weights", default=None, help="CLIP checkpoint file, e.g. OpenAI's ViT-B-32.pt")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (split over ranks)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--numerics", choices=[x.value for x in Numerics], default=Numerics.AUTO.value,
                   help="fast: bf16 autocast + fp32 weights (CUDA); reference: CLIP4Clip fp16 + BertAdam")
    p.add_argument("--optimizer", choices=[x.value for x in Optimizer], default=Optimizer.AUTO.value)
    p.add_argument("--set", dest="overrides", type=parse_assignment, action="append", default=[],
                   metavar="KEY=VALUE", help="override a preset field (repeatable), e.g. lr=1e-4")
    p.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a killed run")
    p.add_argument("--tracking-uri", default=None, help="MLflow store or server (default sqlite under runs/)")
    p.add_argument("--tracking-root", default="runs", help="folder for mlflow.db, artifacts, checkpoints")
    p.add_argument("--experiment", default="eabench")
    p.add_argument("--cache-dir", "--cache-root", dest="cache_dir", default=None,
                   help="frame/feature cache root (default: $EABENCH_CACHE or <root>/.eabench-cache)")
    p.add_argument("--save-checkpoint", action="store_true", help="log checkpoint/best.pt to MLflow")
    p.add_argument("--keep-last", action="store_true", help="keep last.pt after the run finishes")
    p.add_argument("--compile", action="store_true", help="torch.compile the CLIP encoders")
    p.add_argument("--grad-checkpointing", action="store_true", help="trade compute for GPU memory")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="evaluation batch (default: the preset's batch_size_val under reference numerics, else 64)")
    p.add_argument("--workers", type=int, default=1, help="video decoding processes (cache build)")
    p.add_argument("--limit-train", type=int, default=None, help="use the first N training videos")
    p.add_argument("--limit-test", type=int, default=None, help="use the first N test videos")
    p.add_argument("--max-nonfinite-steps", type=int, default=20)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve the run and print its plan (frozen CLIP parameters, trainable counts, "
                        "learning rates, numerics, emulated GPUs, steps) without computing anything")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="re-evaluate a trained run's best epoch")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", default=None, metavar="RUN_ID")
    g.add_argument("--checkpoint", type=Path, default=None, help="a best.pt written by training")
    e.add_argument("--tracking-root", default="runs")
    e.add_argument("--root", default=None, help="data root, if the data moved since training")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_eval)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` an ``eabench train`` command line asks for."""
    if not args.resume and (args.variant is None or args.root is None):
        raise ConfigError("eabench train needs --variant NAME and --root DIR (or --resume RUN_ID, "
                          "which continues a run with its saved settings)")
    return TrainConfig(
        variant=args.variant or "", dataset=args.dataset, root=str(args.root or "."),
        protocol=args.protocol, backbone=args.backbone, weights=args.weights, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, device=args.device, numerics=args.numerics,
        optimizer=args.optimizer, overrides=tuple(args.overrides),
        videos=str(args.videos) if args.videos else None, cache_dir=args.cache_dir,
        tracking_root=args.tracking_root, tracking_uri=args.tracking_uri,
        experiment=args.experiment, save_checkpoint=args.save_checkpoint, keep_last=args.keep_last,
        resume=args.resume, compile=args.compile, grad_checkpointing=args.grad_checkpointing,
        max_nonfinite_steps=args.max_nonfinite_steps, eval_batch_size=args.eval_batch_size,
        workers=args.workers, limit_train=args.limit_train, limit_test=args.limit_test,
        progress=not args.no_progress)


def _print(result: TrainResult, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(result_json(result) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=f"{result.variant} on {result.dataset} ({result.protocol}), "
                        f"best epoch {result.best_epoch}, run {result.run_id}")
    table.add_column("")
    keys = [k for k in METRICS if k in result.t2v]
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in (("T2V", result.t2v), ("V2T", result.v2t)):
        table.add_row(name, *(f"{m[k]:.1f}" for k in keys))
    Console().print(table)  # the result is primary output: stdout


def _print_plan(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(plan) + "\n")
        return
    table = Table(title=f"dry run: {plan['variant']} on {plan['dataset']} ({plan['protocol']} protocol)",
                  show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    for key, value in plan.items():
        if key in ("variant", "dataset", "protocol"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:g}" for k, v in value.items())
        elif isinstance(value, list):
            value = "\n".join(value) if value else "none"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    Console().print(table)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        _print_plan(describe_run(cfg), args.json)
        return 0

    def _terminate(signum: int, frame: Any) -> None:  # SIGTERM (kill, SLURM) ends the run KILLED
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_training(cfg)
        is_main = dist_info().is_main
    finally:
        cleanup()
    if is_main:
        _print(result, args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    result = evaluate(run_id=args.run, checkpoint=args.checkpoint, tracking_root=args.tracking_root,
                      device=args.device, progress=not args.no_progress, root=args.root)
    _print(result, args.json)
    return 0
