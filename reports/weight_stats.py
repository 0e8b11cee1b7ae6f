"""Numbers about frame weights: how much weight lands on the true relevant frames (the synthetic
benchmark's headline) or inside the moments people annotated (DiDeMo, ActivityNet), with a paired
test over videos, and how peaked the weights are (entropy relative to uniform)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["gate_share", "moment_stats", "normalized_entropy", "relevant_weight_share", "share_per_video"]


def share_per_video(
    weights: np.ndarray, relevant: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video: the share of weight on relevant real frames, the uniform share, and whether the
    video has a real frame at all (the others are left out of every mean and test).

    ``share = sum(w[relevant & real]) / sum(w)`` (weight the authors' unmasked softmax puts on
    padded frames counts as missing the relevant ones); ``uniform = #(relevant & real) / #real``,
    what masked mean pooling gives.
    """
    w = np.asarray(weights, dtype=float)
    rel = np.asarray(relevant, dtype=bool)
    real = np.asarray(mask, dtype=float) > 0
    if not (w.shape == rel.shape == real.shape):
        raise ValueError(f"shapes differ: weights {w.shape}, relevant {rel.shape}, mask {real.shape}")
    keep = real.sum(1) > 0
    total = w.sum(1)
    share = (w * (rel & real)).sum(1) / np.where(total > 0, total, 1.0)
    uniform = (rel & real).sum(1) / np.maximum(real.sum(1), 1)
    return share, uniform, keep


def relevant_weight_share(weights: np.ndarray, relevant: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean share of aggregation weight on relevant real frames, and what uniform weights give
    (:func:`share_per_video`), averaged over the videos that have at least one real frame."""
    share, uniform, keep = share_per_video(weights, relevant, mask)
    if not keep.any():
        return float("nan"), float("nan")
    return float(share[keep].mean()), float(uniform[keep].mean())


def moment_stats(
    relevant: np.ndarray, mask: np.ndarray, *, weights: np.ndarray | None = None, gates: np.ndarray | None = None
) -> dict[str, Any]:
    """Does a variant put its weight inside the relevant frames / annotated moments?

    ``share``: mean share of aggregation weight inside (excitation-only variants: gates normalised
    over the real frames, :func:`gate_share`), ``uniform_share``: what uniform weights over the real
    frames give, ``gain`` = share - uniform; ``p_value``: two-sided Wilcoxon signed-rank test over
    videos of the per-video share - uniform share (``scipy.stats.wilcoxon``; zero differences
    dropped, p = 1 when every difference is zero); ``gate_in`` / ``gate_out``: mean gate on real
    frames inside / outside, averaged over the videos that have such frames (NaN without gates).
    """
    if weights is None and gates is None:
        raise ValueError("no gates or weights")
    real = np.asarray(mask, dtype=float) > 0
    src = "weights" if weights is not None else "gates"
    w = np.asarray(weights, dtype=float) if weights is not None else np.asarray(gates, dtype=float) * real
    share, uniform, keep = share_per_video(w, relevant, mask)
    d = (share - uniform)[keep]
    if d.size == 0:
        p = float("nan")
    elif not np.any(d != 0):
        p = 1.0
    else:
        p = float(stats.wilcoxon(d).pvalue)
    out: dict[str, Any] = {
        "source": src,
        "share": float(share[keep].mean()) if keep.any() else float("nan"),
        "uniform_share": float(uniform[keep].mean()) if keep.any() else float("nan"),
        "p_value": p,
        "videos": int(keep.sum()),
        "gate_in": float("nan"),
        "gate_out": float("nan"),
    }
    out["gain"] = out["share"] - out["uniform_share"]
    if gates is not None:
        g = np.asarray(gates, dtype=float)
        rel = np.asarray(relevant, dtype=bool) & real
        for key, sel in (("gate_in", rel), ("gate_out", real & ~rel)):
            n = sel.sum(1)
            per_video = (g * sel).sum(1)[n > 0] / n[n > 0]
            out[key] = float(per_video.mean()) if per_video.size else float("nan")
    return out


def gate_share(gates: np.ndarray, relevant: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The same share for excitation-only variants: the masked mean of gated frames weights frame
    t by ``g_t / sum(g)`` over real frames (ignoring feature norms), so gates normalised over the
    real frames play the role of aggregation weights."""
    g = np.asarray(gates, dtype=float) * (np.asarray(mask, dtype=float) > 0)
    return relevant_weight_share(g, relevant, mask)


def normalized_entropy(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Entropy of each video's weights over its real frames divided by log(#real): 1 = uniform.

    Videos with fewer than two real frames have no spread to measure and give NaN.
    """
    w = np.asarray(weights, dtype=float) * (np.asarray(mask, dtype=float) > 0)
    n = (np.asarray(mask, dtype=float) > 0).sum(1)
    p = w / np.clip(w.sum(1, keepdims=True), 1e-12, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
        out = h / np.log(n)
    return np.where(n > 1, out, np.nan)
