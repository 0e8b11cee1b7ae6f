"""Retrieval metrics R@1/5/10/50, MdR, MnR from a similarity matrix (DATASETS.md §2).

Tie policy (one, explicit): a tie with the ground truth counts *against* it. The 1-based rank of
query i is ``1 + #{candidates j != gt(i) with sim[i, j] >= sim[i, gt(i)]}`` (pessimistic). On
tie-free matrices this equals CLIP4Clip's ``compute_metrics`` (rank = position of the diagonal in
the descending sort; R@K = 100 * mean(rank <= K); MdR = median rank; MnR = mean rank, 1-based).
CLIP4Clip instead counts a tied row several times (its zero search returns every equal entry);
that is a bug, not a policy, so it is not reproduced. NaN scores count as ties (against the gt).

Several captions per video: ``text_to_video[i]`` is the video of caption i. Text-to-video ranks
every caption's video among all videos; video-to-text first takes, for every (video, caption
group of video k), the *max* over the group's captions (CLIP4Clip ``tensor_video_to_text_sim``),
giving a V x V matrix whose diagonal is the ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

KS: tuple[int, ...] = (1, 5, 10, 50)


def _as_tensor(x: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device="cpu", dtype=torch.float64)


def ranks(sim: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """1-based pessimistic rank of the ground-truth column of every row (see module docstring).

    sim: [Nq, Nc]; gt: column index per row (default: the diagonal, which requires Nq <= Nc).
    """
    s = _as_tensor(sim)
    if s.dim() != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(s.shape)}")
    nq, nc = s.shape
    if gt is None:
        if nq > nc:
            raise ValueError(f"diagonal ground truth needs rows <= columns, got {nq} x {nc}; pass gt=")
        g = torch.arange(nq)
    else:
        g = torch.as_tensor(np.asarray(gt), dtype=torch.long).reshape(-1)
        if g.numel() != nq:
            raise ValueError(f"gt has {g.numel()} entries for {nq} query rows")
        if nq and (g.min() < 0 or g.max() >= nc):
            raise ValueError(f"gt indices must lie in [0, {nc}), got [{int(g.min())}, {int(g.max())}]")
    target = s.gather(1, g.unsqueeze(1))
    # NaN candidates count against the gt; a NaN gt gets the worst rank.
    ahead = ((s >= target) | torch.isnan(s)).sum(dim=1) - 1  # minus the gt itself
    r = ahead + 1
    r = torch.where(torch.isnan(target.squeeze(1)), torch.full_like(r, nc), r)
    return r.numpy().astype(np.int64)


def metrics_from_ranks(r: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K (percent), MdR, MnR from 1-based ranks."""
    r = np.asarray(r, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no queries to score")
    out = {f"R{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    return out


def retrieval_metrics(
    sim: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Metrics of rows as queries over columns as candidates: keys R1 R5 R10 R50 MdR MnR."""
    return metrics_from_ranks(ranks(sim, gt), ks)


def _video_to_text_sim(sim: torch.Tensor, t2v: torch.Tensor, n_videos: int) -> torch.Tensor:
    """[V, V]: entry (k, j) = max over captions of video k of sim[caption, video j]."""
    out = torch.full((n_videos, sim.shape[1]), float("-inf"), dtype=sim.dtype)
    idx = t2v.unsqueeze(1).expand(-1, sim.shape[1])
    return out.scatter_reduce(0, idx, sim, reduce="amax", include_self=True)


def t2v_v2t_ranks(
    sim: torch.Tensor | np.ndarray,
    text_to_video: torch.Tensor | np.ndarray | Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """{"t2v": 1-based rank of every caption's video, "v2t": of every video's caption group}.

    Without ``text_to_video`` the matrix is square with the positives on the diagonal. With it,
    caption i belongs to video ``text_to_video[i]`` and v2t uses the max over each video's
    captions (module docstring). The metrics of :func:`t2v_v2t` are computed from these ranks.
    """
    s = _as_tensor(sim)
    if s.dim() != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(s.shape)}")
    if text_to_video is None:
        if s.shape[0] != s.shape[1]:
            raise ValueError(
                f"a {s.shape[0]} x {s.shape[1]} matrix needs text_to_video (the video index of every caption)"
            )
        return {"t2v": ranks(s), "v2t": ranks(s.t())}
    t2v = torch.as_tensor(np.asarray(text_to_video), dtype=torch.long).reshape(-1)
    if t2v.numel() != s.shape[0]:
        raise ValueError(f"text_to_video has {t2v.numel()} entries for {s.shape[0]} captions")
    n_videos = s.shape[1]
    if t2v.min() < 0 or t2v.max() >= n_videos:
        raise ValueError(f"text_to_video indices must lie in [0, {n_videos})")
    missing = sorted(set(range(n_videos)) - set(t2v.tolist()))
    if missing:
        raise ValueError(f"videos without any caption: {missing[:10]} (every video needs >= 1 caption)")
    v2t_sim = _video_to_text_sim(s, t2v, n_videos)  # rows: caption groups, cols: videos
    return {"t2v": ranks(s, t2v), "v2t": ranks(v2t_sim.t())}


def t2v_v2t(
    sim: torch.Tensor | np.ndarray,
    text_to_video: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, dict[str, float]]:
    """{"t2v": ..., "v2t": ...} metrics from a [N_text, N_video] similarity matrix (see
    :func:`t2v_v2t_ranks` for the ground truth)."""
    r = t2v_v2t_ranks(sim, text_to_video)
    return {d: metrics_from_ranks(r[d], ks) for d in ("t2v", "v2t")}
