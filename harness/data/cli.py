"""`eabench data ...`: check, cache, make-fixture, synthetic (thin wrappers)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

DATASETS = ("msrvtt", "activitynet", "didemo", "synthetic")


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="datasets: check files, build the frame cache, "
                                 "write fixtures and the synthetic benchmark")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("dataset", choices=DATASETS)
        p.add_argument("--root", type=Path, required=True,
                       help="folder with the annotation files")
        p.add_argument("--videos", type=Path, default=None,
                       help="folder with the videos (default: --root and its videos/, recursively)")

    p = sub.add_parser("check", help="count listed/present/missing/unreadable videos per split")
    common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-probe", action="store_true",
                   help="do not open each video (faster; unreadable files are not detected)")
    p.add_argument("--workers", type=int, default=4, help="threads that probe videos")
    p.set_defaults(func=_check)

    p = sub.add_parser("cache", help="decode each video once into the frame cache (resumable)")
    common(p)
    p.add_argument("--split", action="append", default=None,
                   help="split(s) to cache (repeatable; default: the preset's train and test)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="decode worker processes (>= 1)")
    p.add_argument("--cache-root", type=Path, default=None,
                   help="default: $EABENCH_CACHE, else <root>/.eabench-cache")
    p.add_argument("--max-frames", type=int, default=None, help="default: the preset's")
    p.add_argument("--fps", type=float, default=None, help="feature_framerate (default 1)")
    p.add_argument("--slice-framepos", type=int, choices=(0, 1, 2), default=None)
    p.add_argument("--image-size", type=int, default=None,
                   help="default: the backbone's input size (224; 32 for synthetic)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the build report as JSON on stdout")
    p.set_defaults(func=_cache)

    p = sub.add_parser("make-fixture", help="write a tiny copy of a dataset with real videos")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--videos", type=int, default=None,
                   help="number of videos (default 10; synthetic 32)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_fixture)

    p = sub.add_parser("synthetic", help="generate the synthetic benchmark (MSR-VTT layout)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--videos", type=int, default=None,
                   help="total videos (a fifth, at least 2, become the test split)")
    p.add_argument("--train", type=int, default=None, dest="num_train")
    p.add_argument("--test", type=int, default=None, dest="num_test")
    p.add_argument("--frames", type=int, default=None, help="seconds per video")
    p.add_argument("--distractor-fraction", type=float, default=None)
    p.add_argument("--placement", choices=("fixed", "random"), default=None)
    p.add_argument("--difficulty", choices=("easy", "hard"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--fps", type=int, default=None)
    p.add_argument("--pretrain-clip", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.set_defaults(func=_synthetic)


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.data.check import check_dataset, render_check
    from harness.data.frame_cache_build import check_workers

    check_workers(args.workers)
    result = check_dataset(args.dataset, args.root, args.videos, probe=not args.no_probe,
                           workers=args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render_check(result, Console())
    return 1 if result["verdict"] == "unusable" else 0


def _cache(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from harness.console import get_console, output_console
    from harness.data.dataset_cache import cache_dataset
    from harness.data.frame_cache_build import check_workers
    from harness.data.frames import settings_for

    # every number is checked before anything is read or decoded (FrameSettings names the flag)
    check_workers(args.workers)
    settings = settings_for(args.dataset, args.max_frames, args.fps, args.slice_framepos,
                            args.image_size)
    splits = [s for arg in args.split for s in arg.split(",") if s] if args.split else None
    console = get_console()
    try:
        built = cache_dataset(args.dataset, args.root, splits=splits, videos=args.videos,
                              settings=settings, cache_root=args.cache_root, workers=args.workers,
                              progress=not args.no_progress)
    except KeyboardInterrupt:
        console.print("interrupted: finished videos are kept; run the same command again to "
                      "resume", highlight=False)
        return 130
    cache, report, splits = built.cache, built.report, list(built.splits)
    out = output_console()  # the build's summary is this command's output: stdout
    summary = report.to_dict()
    summary.update(dataset=args.dataset, key=settings.key(), cached_total=len(cache),
                   cache_bytes=cache.size_bytes(), splits=splits)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        fps = report.frames / report.seconds if report.seconds else 0.0
        # paths, ids and reasons come from data files: never read them as Rich markup
        out.print(f"decoded {report.done} video(s) ({report.frames} frames, "
                      f"{report.seconds:.1f} s, {fps:.0f} frames/s), kept "
                      f"{report.skipped_existing} already cached, {report.missing} missing, "
                      f"{len(report.failed) - report.missing} unreadable; cache holds "
                      f"{len(cache)} videos, {cache.size_bytes() / 2**20:.1f} MiB at "
                      f"{escape(str(cache.path))}", highlight=False)
        if report.rebuilt:
            kinds = ", ".join(f"{n} {kind}" for kind, n in report.rebuilt_reasons().items())
            out.print(f"rebuilt {len(report.rebuilt)} stale cache entr"
                          f"{'y' if len(report.rebuilt) == 1 else 'ies'} ({escape(kinds)})", highlight=False)
        for vid, why in list(report.failed.items())[:10]:
            out.print(f"  failed {escape(vid)}: {escape(why)}", highlight=False)
        if len(report.failed) > 10:
            out.print(f"  ... {len(report.failed) - 10} more in "
                          f"{escape(str(cache.path / 'failed.jsonl'))}", highlight=False)
    return 0


def _make_fixture(args: argparse.Namespace) -> int:
    from harness.data.fixtures import make_fixture

    n = args.videos if args.videos is not None else (32 if args.dataset == "synthetic" else 10)
    manifest = make_fixture(args.dataset, args.out, videos=n, seed=args.seed)
    print(f"wrote a {args.dataset} fixture to {args.out}; try: eabench data check {args.dataset} "
          f"--root {args.out}", file=sys.stderr)
    if args.dataset != "synthetic":
        print(f"  corrupt: {manifest['corrupt']}, missing: {manifest['missing']}", file=sys.stderr)
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from harness.synthetic import SyntheticConfig, generate_synthetic

    fields: dict[str, Any] = {k: getattr(args, k) for k in (
        "num_train", "num_test", "frames", "distractor_fraction", "placement", "difficulty",
        "seed", "width", "height", "fps", "pretrain_clip", "pretrain_steps")
        if getattr(args, k) is not None}
    if args.videos is not None:
        n_test = fields.get("num_test", max(2, args.videos // 5))
        fields.setdefault("num_test", n_test)
        fields.setdefault("num_train", max(1, args.videos - n_test))
    generate_synthetic(args.out, SyntheticConfig(**fields))
    print(f"wrote the synthetic benchmark to {args.out}")
    return 0
