"""Paper protocol on the synthetic benchmark: ``reference`` vs ``fast`` numerics, several seeds.

    python bench/compare_numerics.py --root data/synthetic [--seeds 42 43 44] [--variants meanP seqTransf_A1-4]

Trains every (variant, numerics, seed) in the paper protocol (CLIP fine-tuned) and prints, per
variant, T2V/V2T R@1 mean and standard deviation over seeds for each numerics mode, the mean
difference (fast - reference) and the seed-to-seed standard deviation it is to be compared with,
plus a paired t-test over seeds (scipy.stats.ttest_rel). ``--json`` writes the raw results.
Tracked in MLflow under ``--runs`` (default runs/compare-numerics).
"""
from __future__ import annotations

import argparse
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
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    overrides = tuple(tuple(kv.split("=", 1)) for kv in args.set)
    rows = []
    for variant in args.variants:
        for numerics in (Numerics.REFERENCE, Numerics.FAST):
            for seed in args.seeds:
                t0 = time.perf_counter()
                res = run_training(TrainConfig(
                    variant=variant, dataset="synthetic", root=str(args.root), protocol=Protocol.PAPER.value,
                    numerics=numerics.value, seed=seed, device=args.device, overrides=overrides,
                    tracking_root=args.runs, progress=False))
                rows.append({"variant": variant, "numerics": numerics.value, "seed": seed,
                             "t2v_R1": res.t2v["R1"], "v2t_R1": res.v2t["R1"], "best_epoch": res.best_epoch,
                             "skipped_steps": res.skipped_steps, "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    from scipy import stats

    print("| variant | metric | reference mean ± sd | fast mean ± sd | Δ fast−ref (mean over seeds) "
          "| seed sd (pooled) | paired t-test p |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for metric in ("t2v_R1", "v2t_R1"):
            ref = [r[metric] for r in rows if r["variant"] == variant and r["numerics"] == "reference"]
            fast = [r[metric] for r in rows if r["variant"] == variant and r["numerics"] == "fast"]
            sd_ref = statistics.stdev(ref) if len(ref) > 1 else float("nan")
            sd_fast = statistics.stdev(fast) if len(fast) > 1 else float("nan")
            pooled = ((sd_ref ** 2 + sd_fast ** 2) / 2) ** 0.5
            delta = statistics.mean(fast) - statistics.mean(ref)
            pval = stats.ttest_rel(fast, ref).pvalue if len(ref) > 1 else float("nan")
            print(f"| {variant} | {metric.replace('_', ' ')} | {statistics.mean(ref):.1f} ± {sd_ref:.1f} "
                  f"| {statistics.mean(fast):.1f} ± {sd_fast:.1f} | {delta:+.1f} | {pooled:.1f} | {pval:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
