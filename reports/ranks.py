"""Per-query ranks read back from MLflow: the ``ranks.npz`` artifact every run logs at its best epoch
(``eval/ranks.npz`` after ``eabench eval``), from which the run's metrics are computed exactly.

An :class:`Arm` is one table row or one side of ``eabench report compare``: the ranks of one or
more seeds of a variant on the same test set, as [seeds, queries] arrays.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError, DataError
from harness.train.schema import ARTIFACT_RANKS, DIRECTIONS

__all__ = ["EVAL_RANKS", "Arm", "RunRanks", "arm_of", "check_same_test_set", "load_ranks", "load_ranks_for"]

EVAL_RANKS = f"eval/{ARTIFACT_RANKS}"  # what `eabench eval` logs when it re-scores a run


@dataclass(frozen=True)
class RunRanks:
    """One run's ``ranks.npz``: 1-based ranks per T2V query and per V2T video, with their ids."""

    run_id: str
    t2v: np.ndarray          # int64 [queries]
    v2t: np.ndarray          # int64 [videos]
    query_ids: tuple[str, ...]
    video_ids: tuple[str, ...]
    source: str = ARTIFACT_RANKS

    @classmethod
    def from_npz(cls, path: Path, run_id: str = "", source: str = ARTIFACT_RANKS) -> RunRanks:
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: cannot read ranks ({exc})") from None
        missing = [k for k in ("t2v", "v2t", "query_ids", "video_ids") if k not in data]
        if missing:
            raise DataError(f"{path}: missing arrays {missing} (engine schema: t2v, v2t, query_ids, video_ids)")
        t2v, v2t = np.asarray(data["t2v"], dtype=np.int64), np.asarray(data["v2t"], dtype=np.int64)
        q, v = tuple(str(x) for x in data["query_ids"]), tuple(str(x) for x in data["video_ids"])
        if len(q) != len(t2v) or len(v) != len(v2t):
            raise DataError(f"{path}: {len(t2v)} t2v ranks for {len(q)} query ids, {len(v2t)} v2t for {len(v)} videos")
        return cls(run_id, t2v, v2t, q, v, source)

    def ranks(self, direction: str) -> np.ndarray:
        return self.t2v if direction == "t2v" else self.v2t

    def ids(self, direction: str) -> tuple[str, ...]:
        return self.query_ids if direction == "t2v" else self.video_ids


def load_ranks(client: Any, run_id: str) -> RunRanks | None:
    """The run's per-query ranks (``ranks.npz``, else ``eval/ranks.npz``); None when it logged neither
    (runs trained before ranks were logged)."""
    try:
        top = {a.path for a in client.list_artifacts(run_id)}
        names = [ARTIFACT_RANKS] if ARTIFACT_RANKS in top else []
        if not names and "eval" in top:
            names = [p for p in (a.path for a in client.list_artifacts(run_id, "eval")) if p == EVAL_RANKS]
    except Exception:  # an unreachable artifact store reads as "no ranks", not a crash
        return None
    if not names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, names[0], tmp)
        return RunRanks.from_npz(Path(local), run_id, names[0])


def load_ranks_for(client: Any, run_ids: Iterable[str]) -> dict[str, RunRanks]:
    """Ranks of every run that has them, by run id."""
    out = {}
    for rid in dict.fromkeys(run_ids):
        r = load_ranks(client, rid)
        if r is not None:
            out[rid] = r
    return out


def check_same_test_set(ranks: list[RunRanks], names: list[str] | None = None) -> None:
    """Raise ConfigError unless every run ranked the same queries and videos in the same order."""
    if not ranks:
        return
    names = names or [r.run_id for r in ranks]
    ref = ranks[0]
    for name, r in zip(names[1:], ranks[1:]):
        for d in DIRECTIONS:
            if r.ids(d) != ref.ids(d):
                what = "queries" if d == "t2v" else "videos"
                a, b = ref.ids(d), r.ids(d)
                diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                where = (f"first difference at position {diff}: {a[diff]!r} vs {b[diff]!r}"
                         if diff < min(len(a), len(b)) else f"{len(a)} vs {len(b)} {what}")
                raise ConfigError(
                    f"{names[0]} and {name} were not scored on the same test set ({what} differ; {where}): "
                    f"a paired comparison needs the same {what}"
                )


@dataclass(frozen=True)
class Arm:
    """One row's ranks over its seeds: ``t2v`` [seeds, queries], ``v2t`` [seeds, videos]."""

    run_ids: tuple[str, ...]
    t2v: np.ndarray
    v2t: np.ndarray
    query_ids: tuple[str, ...]
    video_ids: tuple[str, ...]

    def ranks(self, direction: str) -> np.ndarray:
        return self.t2v if direction == "t2v" else self.v2t

    def success(self, direction: str, k: int) -> np.ndarray:
        """[seeds, items] 0/1: rank <= k (R@k is its mean times 100)."""
        return (self.ranks(direction) <= k).astype(float)

    @property
    def seeds(self) -> int:
        return int(self.t2v.shape[0])


def arm_of(run_ids: Iterable[str], ranks: Mapping[str, RunRanks]) -> Arm | None:
    """The arm of these runs; None unless every one has ranks on one common test set."""
    ids = list(dict.fromkeys(run_ids))
    got = [ranks.get(r) for r in ids]
    if not got or any(g is None for g in got):
        return None
    try:
        check_same_test_set(got)  # type: ignore[arg-type]
    except ConfigError:
        return None
    return Arm(tuple(ids), np.stack([g.t2v for g in got]), np.stack([g.v2t for g in got]),  # type: ignore[union-attr]
               got[0].query_ids, got[0].video_ids)  # type: ignore[union-attr]
