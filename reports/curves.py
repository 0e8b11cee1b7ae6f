"""Line figures: the reduction-ratio ablation curve and per-epoch training curves."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from harness.figures import training_curves_figure
from harness.train.schema import METRIC_LOSS, metric_key
from reports.labels import ablation_ratio, parse_spec, ratio_family, row_info
from variants import format_ratio

__all__ = ["plot_ratio_curve", "plot_training_curves", "ratio_points"]


T2V_R1 = metric_key("t2v", "R1")


def ratio_points(runs_df: pd.DataFrame, metric: str = T2V_R1, min_ratios: int = 3) -> pd.DataFrame:
    """Per ratio family (variants equal up to their ratio), mean/std of ``metric`` per ratio.

    Only families measured at ``min_ratios`` or more ratios make a curve: the main tables hold
    each block at r = 4 and 1/4 only, which is a comparison, not an ablation curve.
    Columns: family, label, r (float),
    r_text, mean, std, n.
    """
    recs = []
    for variant, g in runs_df.groupby("variant"):
        spec = parse_spec(str(variant))
        r = ablation_ratio(spec)
        if spec is None or r is None:
            continue
        vals = g[metric].astype(float).dropna()
        if vals.empty:
            continue
        recs.append(
            {
                "family": ratio_family(spec),
                "variant": variant,
                "r": float(r),
                "r_text": format_ratio(r, "/"),
                "mean": float(vals.mean()),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "n": len(vals),
                "temporal": spec.temporal,
            }
        )
    df = pd.DataFrame(recs, columns=["family", "variant", "r", "r_text", "mean", "std", "n", "temporal"])
    if df.empty:
        return df
    counts = df.groupby("family")["r"].nunique()
    df = df[df["family"].isin(counts[counts >= min_ratios].index)]
    # A readable legend entry per family: the label of one member with its ratio text removed.
    labels = {}
    for fam, g in df.groupby("family"):
        first = g.iloc[0]
        lab = row_info(first["variant"]).label
        labels[fam] = f"{first['temporal']}: " + lab.split(")", 1)[-1].rsplit("(", 1)[0].strip()
    df = df.assign(label=df["family"].map(labels))
    return df.sort_values(["family", "r"]).reset_index(drop=True)


def plot_ratio_curve(points: pd.DataFrame, metric_name: str = "T2V R@1") -> tuple[Figure, list[str]]:
    """R@1 against the reduction ratio r (log x axis), one line per family, ±std error bars."""
    if points.empty:
        raise ValueError("no ratio ablation: no variant family was run at three or more ratios")
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for _, g in points.groupby("family", sort=False):
        ax.errorbar(g["r"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=g["label"].iloc[0])
    ax.set_xscale("log")
    ticks = sorted(set(points["r"]))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([points.loc[points["r"] == t, "r_text"].iloc[0] for t in ticks])
    ax.set_xlabel("reduction ratio r (log scale; r > 1 squeeze, r < 1 expansion)")
    ax.set_ylabel(metric_name)
    ax.set_title("Reduction-ratio ablation", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return fig, ["ratio_curve"]


def plot_training_curves(histories: dict[str, pd.DataFrame]) -> tuple[Figure, list[str]]:
    """Loss and T2V R@1 per epoch, one line per run (``histories``: label -> load_history frame),
    drawn by :func:`harness.figures.training_curves_figure` (the figure training logs per run)."""
    if not histories or all(h.empty for h in histories.values()):
        raise ValueError("no per-epoch metrics logged for these runs")
    rows = {
        label: [{"epoch": float(e), **{k: float(v) for k, v in r.items() if pd.notna(v)}} for e, r in h.iterrows()]
        for label, h in histories.items()
    }
    fig = training_curves_figure(rows)
    return fig, [ax.get_label() for ax in fig.axes if ax.get_label() in (METRIC_LOSS, T2V_R1)]
