"""Retrieval metrics on hand-made matrices (DATASETS.md §2), including ties and multi-caption sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.metrics import ranks, retrieval_metrics, t2v_v2t


def clip4clip_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """CLIP4Clip metrics.py (tie-free matrices): sort -x, subtract the diagonal, find zeros."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {
        "R1": float(np.sum(ind == 0)) * 100 / len(ind),
        "R5": float(np.sum(ind < 5)) * 100 / len(ind),
        "R10": float(np.sum(ind < 10)) * 100 / len(ind),
        "MdR": float(np.median(ind)) + 1,
        "MnR": float(np.mean(ind)) + 1,
    }


def test_hand_matrix_ranks_and_metrics() -> None:
    s = np.array([
        [0.9, 0.1, 0.2, 0.3],   # gt first -> rank 1
        [0.8, 0.5, 0.1, 0.0],   # one above -> rank 2
        [0.7, 0.6, 0.1, 0.3],   # three above -> rank 4
        [0.0, 0.1, 0.2, 0.3],   # rank 1
    ])
    assert ranks(s).tolist() == [1, 2, 4, 1]
    m = retrieval_metrics(s)
    assert m["R1"] == 50.0 and m["R5"] == 100.0 and m["R10"] == 100.0 and m["R50"] == 100.0
    assert m["MdR"] == 1.5 and m["MnR"] == 2.0
    # v2t = columns as queries: column 0 has 0.9 top (rank 1); column 1: 0.5 vs 0.1,0.6,0.1 -> rank 2;
    # column 2: 0.1 vs 0.2,0.1,0.2 -> pessimistic tie with 0.1 -> rank 4; column 3: 0.3 vs 0.3,0.0,0.3 -> 3
    out = t2v_v2t(torch.tensor(s))
    assert ranks(s.T).tolist() == [1, 2, 4, 3]
    assert out["v2t"]["R1"] == 25.0 and out["v2t"]["MnR"] == 2.5
    assert set(out["t2v"]) == {"R1", "R5", "R10", "R50", "MdR", "MnR"}


def test_ties_count_against_the_ground_truth() -> None:
    s = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    assert ranks(s).tolist() == [2, 2, 3]
    m = retrieval_metrics(s)
    assert m["R1"] == 0.0 and m["MnR"] == pytest.approx(7 / 3)


def test_nan_scores_are_pessimistic() -> None:
    s = np.array([[1.0, np.nan], [np.nan, 0.5]])
    assert ranks(s).tolist() == [2, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_clip4clip_on_tie_free_matrices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(60, 60))
    ref = clip4clip_compute_metrics(s)
    got = retrieval_metrics(s)
    for k in ref:
        assert got[k] == pytest.approx(ref[k]), k
    got_v = t2v_v2t(s)["v2t"]
    ref_v = clip4clip_compute_metrics(s.T)
    assert got_v["MnR"] == pytest.approx(ref_v["MnR"])


def test_several_captions_per_video() -> None:
    # 5 captions of 3 videos: caption -> video [0, 0, 1, 2, 2]
    s = np.array([
        [0.9, 0.2, 0.1],  # c0 (v0): rank 1
        [0.3, 0.5, 0.1],  # c1 (v0): rank 2
        [0.2, 0.4, 0.6],  # c2 (v1): rank 2
        [0.1, 0.2, 0.8],  # c3 (v2): rank 1
        [0.5, 0.1, 0.3],  # c4 (v2): rank 2
    ])
    t2v = [0, 0, 1, 2, 2]
    out = t2v_v2t(s, t2v)
    assert out["t2v"]["R1"] == pytest.approx(40.0)
    assert out["t2v"]["MnR"] == pytest.approx(8 / 5)
    # v2t: max over each video's captions. groups: g0={c0,c1}, g1={c2}, g2={c3,c4}
    # video 0 scores per group: g0 max(0.9,0.3)=0.9, g1 0.2, g2 max(0.1,0.5)=0.5 -> rank 1
    # video 1: g0 max(0.2,0.5)=0.5, g1 0.4, g2 0.2 -> rank 2
    # video 2: g0 0.1, g1 0.6, g2 max(0.8,0.3)=0.8 -> rank 1
    assert out["v2t"]["R1"] == pytest.approx(200 / 3)
    assert out["v2t"]["MnR"] == pytest.approx(4 / 3)
    assert out["v2t"]["MdR"] == 1.0


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="text_to_video"):
        t2v_v2t(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="without any caption"):
        t2v_v2t(np.zeros((3, 3)), [0, 0, 1])
    with pytest.raises(ValueError, match="entries"):
        t2v_v2t(np.zeros((3, 3)), [0, 1])
    with pytest.raises(ValueError, match="gt indices"):
        ranks(np.zeros((2, 2)), [0, 5])


def test_large_matrix_is_fast() -> None:
    import time

    s = torch.randn(2000, 2000)
    s.fill_diagonal_(10.0)
    t = time.perf_counter()
    out = t2v_v2t(s)
    assert time.perf_counter() - t < 5.0
    assert out["t2v"]["R1"] == 100.0 and out["v2t"]["MdR"] == 1.0 and math.isclose(out["v2t"]["MnR"], 1.0)
