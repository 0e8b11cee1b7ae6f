"""Paper protocol on the synthetic benchmark: ``reference`` vs ``fast`` numerics, several seeds.

    python bench/compare_numerics.py --root data/synthetic [--seeds 42 43 44] [--variants meanP seqTransf_A1-4]
    python bench/compare_numerics.py --numerics fast --json fast.json      # one half of the grid
    python bench/compare_numerics.py --table-from ref.json fast.json        # table from saved rows, no training

Trains every (variant, numerics, seed) in the paper protocol (CLIP fine-tuned) and prints, per
variant, T2V/V2T R@1 mean and standard deviation over seeds for each numerics mode, the mean
difference (fast - reference) and the seed-to-seed standard deviation it is to be compared with,
plus two paired tests over seeds: a t-test (scipy.stats.ttest_rel; "-" when every seed gives the
same difference, where it is undefined) and the exact sign-flip permutation test, which assumes no
distribution but cannot go below 2 / 2^n with n seeds (0.25 for 3). ``--json`` writes the raw results.
Tracked in MLflow under ``--runs`` (default runs/compare-numerics).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.train import Numerics, Protocol, TrainConfig, run_training  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("data/synthetic"))
    p.add_argument("--variants", nargs="+", default=["meanP", "seqTransf_A1-4"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--runs", default="runs/compare-numerics")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--numerics", nargs="+", choices=[n.value for n in Numerics],
                   default=[Numerics.REFERENCE.value, Numerics.FAST.value])
    p.add_argument("--json", type=Path, default=None, help="write the raw rows here")
    p.add_argument("--table-from", nargs="+", type=Path, default=None, metavar="JSON",
                   help="print the table from rows saved by --json (several files are concatenated); no training")
    args = p.parse_args()
    if args.table_from:
        rows = [row for path in args.table_from for row in json.loads(path.read_text())]
        print_table(rows, sorted({r["variant"] for r in rows}, key=[r["variant"] for r in rows].index))
        return 0
    overrides = tuple(tuple(kv.split("=", 1)) for kv in args.set)
    rows = []
    for variant in args.variants:
        for numerics in args.numerics:
            for seed in args.seeds:
                t0 = time.perf_counter()
                res = run_training(TrainConfig(
                    variant=variant, dataset="synthetic", root=str(args.root), protocol=Protocol.PAPER.value,
                    numerics=numerics, seed=seed, device=args.device, overrides=overrides,
                    tracking_root=args.runs, progress=False))
                rows.append({"variant": variant, "numerics": numerics, "seed": seed,
                             "t2v_R1": res.t2v["R1"], "v2t_R1": res.v2t["R1"], "best_epoch": res.best_epoch,
                             "skipped_steps": res.skipped_steps, "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print_table(rows, args.variants)
    return 0


def print_table(rows: list[dict], variants: list[str]) -> None:
    """Markdown table on stdout: per variant and metric, both modes' mean ± sd, the difference, a paired test."""
    from scipy import stats

    print("| variant | metric | reference mean ± sd | fast mean ± sd | Δ fast−ref (mean over seeds) "
          "| seed sd (pooled) | paired t-test p | sign-flip p (exact) |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in variants:
        for metric in ("t2v_R1", "v2t_R1"):
            by_seed = {mode: {r["seed"]: r[metric] for r in rows
                              if r["variant"] == variant and r["numerics"] == mode} for mode in ("reference", "fast")}
            if not by_seed["reference"] or not by_seed["fast"]:
                continue
            ref, fast = list(by_seed["reference"].values()), list(by_seed["fast"].values())
            seeds = sorted(by_seed["reference"].keys() & by_seed["fast"].keys())  # pair runs by seed
            sd_ref = statistics.stdev(ref) if len(ref) > 1 else float("nan")
            sd_fast = statistics.stdev(fast) if len(fast) > 1 else float("nan")
            pooled = ((sd_ref ** 2 + sd_fast ** 2) / 2) ** 0.5
            delta = statistics.mean(fast) - statistics.mean(ref)
            fast_paired = [by_seed["fast"][s] for s in seeds]
            ref_paired = [by_seed["reference"][s] for s in seeds]
            diffs = [f - r for f, r in zip(fast_paired, ref_paired)]
            t_p = (f"{stats.ttest_rel(fast_paired, ref_paired).pvalue:.2g}"
                   if len(seeds) > 1 and len(set(diffs)) > 1 else "-")
            print(f"| {variant} | {metric.replace('_', ' ')} | {statistics.mean(ref):.1f} ± {sd_ref:.1f} "
                  f"| {statistics.mean(fast):.1f} ± {sd_fast:.1f} | {delta:+.1f} | {pooled:.1f} | {t_p} "
                  f"| {sign_flip_p(diffs):.2g} |")


def sign_flip_p(diffs: list[float]) -> float:
    """Two-sided exact p of the paired sign-flip test: the share of the 2^n sign patterns whose mean
    difference is at least as far from 0 as the observed one (nan without pairs)."""
    if not diffs:
        return float("nan")
    observed = abs(sum(diffs)) - 1e-9
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    return sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed for signs in patterns) / len(patterns)


if __name__ == "__main__":
    sys.exit(main())
