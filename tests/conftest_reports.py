"""Helpers for the reports tests: a tmp MLflow store filled with runs in the engine's schema
(docs/ARCHITECTURE.md, "MLflow run schema"), written here with plain MlflowClient calls so the
report tests never depend on the engine."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

METRIC_KEYS = ("R1", "R5", "R10", "MdR", "MnR")
_TEMPLATE: dict[str, Path] = {}


def _empty_db(dest: Path) -> None:
    """Copy a migrated empty MLflow database (creating one costs seconds of schema migrations)."""
    if "db" not in _TEMPLATE:
        from mlflow.tracking import MlflowClient

        tdir = Path(tempfile.mkdtemp(prefix="eabench-mlflow-template-"))
        atexit.register(shutil.rmtree, tdir, True)  # a test run leaves nothing in /tmp
        MlflowClient(tracking_uri=f"sqlite:///{tdir}/mlflow.db").search_experiments()
        _TEMPLATE["db"] = tdir / "mlflow.db"
    shutil.copy(_TEMPLATE["db"], dest)


class Store:
    """A sqlite MLflow store under ``root`` with the ``eabench`` experiment."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{self.root.resolve()}/mlflow.db"
        if not (self.root / "mlflow.db").exists():
            _empty_db(self.root / "mlflow.db")
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name("eabench")
        self.exp_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(
                "eabench", artifact_location=(self.root / "artifacts").resolve().as_uri()
            )
        )

    def study(self, name: str, table: str | None = None) -> str:
        tags = {"eabench.kind": "study", "optuna.study": name}
        if table:
            tags["paper_table"] = table
        run = self.client.create_run(self.exp_id, tags=tags, run_name=name)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def run(
        self,
        variant: str,
        *,
        t2v: dict[str, float],
        v2t: dict[str, float] | None = None,
        dataset: str = "msrvtt",
        protocol: str = "frozen",
        seed: int = 0,
        study: str | None = None,
        parent: str | None = None,
        table: str = "",
        label: str = "",
        temporal: str | None = None,
        npz: dict[str, np.ndarray] | None = None,
        history: list[dict[str, float]] | None = None,
        params: dict[str, str] | None = None,
        status: str = "FINISHED",
        ranks: dict[str, np.ndarray] | None = None,
        extra_metrics: dict[str, float] | None = None,
        numerics: str | None = None,
    ) -> str:
        tags = {
            "variant": variant,
            "temporal": temporal or variant.split("_")[0],
            "dataset": dataset,
            "protocol": protocol,
            "paper_table": table,
            "paper_label": label,
            "seed": str(seed),
            "eabench.kind": "train",
            **({"numerics": numerics} if numerics else {}),
        }
        if study:
            tags["optuna.study"] = study
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.exp_id, tags=tags, run_name=f"{variant}-s{seed}")
        rid = run.info.run_id
        from mlflow.entities import Metric, Param

        batch = [
            Metric(f"best/{d}/{m}", float(x), 0, 0)
            for d, vals in (("t2v", t2v), ("v2t", v2t or t2v))
            for m, x in vals.items()
        ]
        batch += [
            Metric(k, float(x), 0, epoch) for epoch, h in enumerate(history or []) for k, x in h.items()
        ]
        batch += [Metric(k, float(x), 0, 0) for k, x in (extra_metrics or {}).items()]
        self.client.log_batch(rid, metrics=batch, params=[Param(k, v) for k, v in (params or {}).items()])
        if npz is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / "frame_weights.npz"
                np.savez(p, **npz)
                self.client.log_artifact(rid, str(p))
        if ranks is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / "ranks.npz"
                np.savez(p, **ranks_npz(**ranks))
                self.client.log_artifact(rid, str(p))
        self.client.set_terminated(rid, status)
        return rid


def ranks_npz(t2v: Any, v2t: Any = None, query_ids: Any = None, video_ids: Any = None) -> dict[str, Any]:
    """The engine's ``ranks.npz`` arrays for planted ranks: one caption per video unless ids are given."""
    t2v = np.asarray(t2v, dtype=np.int64)
    v2t = t2v.copy() if v2t is None else np.asarray(v2t, dtype=np.int64)
    vids = [f"video{i}" for i in range(len(v2t))] if video_ids is None else list(video_ids)
    qids = [f"{vids[i]}#0" for i in range(len(t2v))] if query_ids is None else list(query_ids)
    return {
        "t2v": t2v,
        "v2t": v2t,
        "query_ids": np.array(qids, dtype=str),
        "video_ids": np.array(vids, dtype=str),
        "query_video": np.arange(len(t2v), dtype=np.int64) % max(len(vids), 1),
    }


def metrics(
    r1: float, r5: float = 70.0, r10: float = 80.0, mdr: float = 2.0, mnr: float = 15.0, **extra: float
) -> dict[str, float]:
    return {"R1": r1, "R5": r5, "R10": r10, "MdR": mdr, "MnR": mnr, **extra}


def weights_npz(*, gates: bool, weights: bool) -> dict[str, Any]:
    """Two test videos, T = 4; the second has a padded last frame (see test_reports_weights)."""
    out: dict[str, Any] = {
        "video_ids": np.array(["video1", "video2"]),
        "texts": np.array(["a red circle and then a blue square", "a green cross followed by a pink circle"]),
        "mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=np.float32),
        "frame_times": np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, np.nan]], dtype=np.float32),
    }
    if gates:
        out["gates"] = np.array([[0.9, 0.8, 0.2, 0.1], [0.3, 0.9, 0.4, 0.5]], dtype=np.float32)
    if weights:
        out["weights"] = np.array([[0.4, 0.4, 0.1, 0.1], [0.2, 0.6, 0.2, 0.0]], dtype=np.float32)
    return out


def write_truth(root: Path) -> Path:
    """Truth in the generator's format: per video one relevance flag per second."""
    root.mkdir(parents=True, exist_ok=True)
    truth = {
        "config": {"frames": 4},
        "videos": {
            "video1": {"split": "test", "relevant_seconds": [True, True, False, False]},
            "video2": {"split": "test", "relevant_seconds": [False, True, False, False]},
        },
    }
    p = root / "synthetic_truth.json"
    p.write_text(json.dumps(truth))
    return p
