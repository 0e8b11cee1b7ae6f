"""Reading tracked runs back from MLflow (the schema in docs/ARCHITECTURE.md, "MLflow run schema").

Everything in ``reports/`` goes through this module, so a notebook can do the same:
``runs = load_runs(study="meanP-synthetic")`` then ``runs_frame(runs)``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError, DataError
from harness.tracking import DEFAULT_EXPERIMENT, resolve_uri
from harness.train.schema import (
    ARTIFACT_FRAME_WEIGHTS,
    DIRECTIONS,
    KIND_STUDY,
    METRIC_LOSS,
    METRIC_SKIPPED,
    METRICS,
    TAG_DATASET,
    TAG_KIND,
    TAG_NUMERICS,
    TAG_PAPER_LABEL,
    TAG_PAPER_TABLE,
    TAG_PROTOCOL,
    TAG_SEED,
    TAG_STUDY,
    TAG_TEMPORAL,
    TAG_VARIANT,
    best_key,
    metric_key,
)

__all__ = [
    "FrameWeights",
    "RunRecord",
    "find_study_parent",
    "list_studies",
    "load_frame_weights",
    "load_history",
    "load_runs",
    "open_client",
    "runs_frame",
]


def open_client(tracking_uri: str | None = None, root: Path | str = "runs") -> Any:
    """An ``MlflowClient`` on ``tracking_uri``, else the store the harness writes by default
    (``$EABENCH_TRACKING_URI``, ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<root>/mlflow.db``)."""
    from mlflow.tracking import MlflowClient  # seconds to import; harness.tracking defers it too

    # mlflow's own tqdm bars would write to stderr during artifact downloads (STACK.md §5).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_uri(root, tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.exists():
            raise ConfigError(
                f"no MLflow store at {db}: run a training or a study first "
                f"(e.g. `eabench reproduce`), or pass --tracking-uri / --root"
            )
    return MlflowClient(tracking_uri=uri)


@dataclass(frozen=True)
class RunRecord:
    """One training run as the reports see it."""

    run_id: str
    run_name: str
    status: str
    variant: str
    temporal: str
    dataset: str
    protocol: str
    paper_table: str
    paper_label: str
    seed: str
    study: str
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of every metric
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    numerics: str = ""  # "reference" / "fast"; "" for runs that did not record it

    def best(self, direction: str, metric: str) -> float:
        """``best/<direction>/<metric>`` (NaN when the run did not log it)."""
        return float(self.metrics.get(best_key(direction, metric), np.nan))


def _record(run: Any) -> RunRecord:
    tags = dict(run.data.tags)
    params = dict(run.data.params)

    def pick(key: str, default: str = "") -> str:
        return tags.get(key) or params.get(key) or default

    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or tags.get("mlflow.runName", ""),
        status=run.info.status,
        variant=pick(TAG_VARIANT, run.info.run_name or "?"),
        temporal=pick(TAG_TEMPORAL),
        dataset=pick(TAG_DATASET, "?"),
        protocol=pick(TAG_PROTOCOL, "?"),
        paper_table=pick(TAG_PAPER_TABLE),
        paper_label=pick(TAG_PAPER_LABEL),
        seed=pick(TAG_SEED),
        study=tags.get(TAG_STUDY, ""),
        numerics=pick(TAG_NUMERICS),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        params=params,
        tags=tags,
    )


def _experiment_ids(client: Any, experiment: str) -> list[str]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(
            f"MLflow experiment {experiment!r} not found; known: {', '.join(names) or 'none'} "
            f"(pass --experiment)"
        )
    return [exp.experiment_id]


_IS_STUDY = f"tags.`{TAG_KIND}` = '{KIND_STUDY}'"  # a study's parent run


def _of_study(study: str) -> str:
    return f"tags.`{TAG_STUDY}` = '{study}'"


def _search(client: Any, exp_ids: list[str], filter_string: str) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string=filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def list_studies(client: Any, experiment: str = DEFAULT_EXPERIMENT) -> list[str]:
    """Names of the studies recorded in ``experiment`` (parent runs, newest first)."""
    exp_ids = _experiment_ids(client, experiment)
    parents = _search(client, exp_ids, _IS_STUDY)
    names = [p.data.tags.get(TAG_STUDY) or p.info.run_name for p in parents]
    return list(dict.fromkeys(n for n in names if n))


def find_study_parent(client: Any, study: str, experiment: str = DEFAULT_EXPERIMENT) -> Any | None:
    """The study's parent run (tag ``eabench.kind=study``), newest first; None if absent."""
    exp_ids = _experiment_ids(client, experiment)
    parents = _search(client, exp_ids, f"{_of_study(study)} and {_IS_STUDY}")
    if not parents:
        parents = [r for r in _search(client, exp_ids, _IS_STUDY) if r.info.run_name == study]
    return parents[0] if parents else None


def load_runs(
    client: Any,
    *,
    study: str | None = None,
    run_ids: list[str] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    finished_only: bool = True,
) -> list[RunRecord]:
    """Training runs of a study (child runs carrying its ``optuna.study`` tag) or given by id.

    Runs that did not finish (pruned, failed, still running) are left out unless
    ``finished_only`` is False: a table of half-trained models would mislead.
    """
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(client.get_run(rid))
            except Exception as exc:  # mlflow raises its own MlflowException
                raise ConfigError(f"run {rid!r} not found in the MLflow store: {exc}") from None
    elif study:
        exp_ids = _experiment_ids(client, experiment)
        runs = _search(client, exp_ids, _of_study(study))
        runs = [r for r in runs if r.data.tags.get(TAG_KIND) != KIND_STUDY]
        if not runs:
            known = list_studies(client, experiment)
            raise ConfigError(
                f"no runs of study {study!r} in experiment {experiment!r}; "
                f"studies found: {', '.join(known) or 'none'}"
            )
    else:
        raise ConfigError("give a study (--study NAME) or run ids (--run RUN_ID)")
    recs = [_record(r) for r in runs]
    if finished_only:
        recs = [r for r in recs if r.status == "FINISHED"]
    # Oldest first: stable row order when the registry cannot order them.
    return sorted(recs, key=lambda r: (r.variant, r.seed, r.run_id))


def runs_frame(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run: identification columns and ``<dir>/<metric>`` best-epoch metrics."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "run_id": r.run_id,
            "variant": r.variant,
            "temporal": r.temporal or _temporal_of(r.variant),
            "dataset": r.dataset,
            "protocol": r.protocol,
            "numerics": r.numerics,
            "paper_table": r.paper_table,
            "paper_label": r.paper_label,
            "seed": r.seed,
            "study": r.study,
            # test queries (for the power statement of runs without ranks) and non-finite steps skipped
            "n_queries": pd.to_numeric(r.params.get("test_texts"), errors="coerce"),
            "skipped_steps": r.metrics.get(METRIC_SKIPPED, np.nan),
        }
        for d in DIRECTIONS:
            for m in METRICS:
                row[metric_key(d, m)] = r.best(d, m)
        rows.append(row)
    cols = [
        "run_id",
        "variant",
        "temporal",
        "dataset",
        "protocol",
        "numerics",
        "paper_table",
        "paper_label",
        "seed",
        "study",
        "n_queries",
        "skipped_steps",
    ] + [metric_key(d, m) for d in DIRECTIONS for m in METRICS]
    return pd.DataFrame(rows, columns=cols)


def _temporal_of(variant: str) -> str:
    return variant.split("_")[0].split("-")[0]


# ------------------------------------------------------------------ artifacts
@dataclass(frozen=True)
class FrameWeights:
    """The ``frame_weights.npz`` artifact: what the model did with each test video's frames."""

    video_ids: list[str]
    texts: list[str]
    mask: np.ndarray  # [N, T] float, 1 = real frame
    gates: np.ndarray | None = None  # [N, T] excitation gates in (0, 1)
    weights: np.ndarray | None = None  # [N, T] aggregation weights (softmax over T)
    frame_times: np.ndarray | None = None  # [N, T] seconds of each sampled frame
    moments: np.ndarray | None = None  # [N, T] bool: frame inside a moment people annotated (DiDeMo, ActivityNet)

    @property
    def has_any(self) -> bool:
        return self.gates is not None or self.weights is not None

    @classmethod
    def from_npz(cls, path: Path) -> FrameWeights:
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: cannot read frame weights ({exc})") from None
        for key in ("video_ids", "mask"):
            if key not in data:
                raise DataError(
                    f"{path}: missing array {key!r} (engine schema: video_ids, texts, mask, "
                    f"gates?, weights?, frame_times?, moments?)"
                )
        mask = np.asarray(data["mask"], dtype=float)
        n = mask.shape[0]

        def opt(key: str) -> np.ndarray | None:
            if key not in data:
                return None
            arr = np.asarray(data[key], dtype=float)
            if arr.shape != mask.shape:
                raise DataError(f"{path}: array {key!r} has shape {arr.shape}, mask has {mask.shape}")
            return arr

        texts = [str(t) for t in data["texts"]] if "texts" in data else [""] * n
        moments = opt("moments")
        return cls(
            video_ids=[str(v) for v in data["video_ids"]],
            texts=texts,
            mask=mask,
            gates=opt("gates"),
            weights=opt("weights"),
            frame_times=opt("frame_times"),
            moments=None if moments is None else (moments > 0) & (mask > 0),
        )


def load_frame_weights(client: Any, run_id: str) -> FrameWeights | None:
    """The run's frame weights, or None when the run logged no ``frame_weights.npz``."""
    names = {a.path for a in client.list_artifacts(run_id)}
    if ARTIFACT_FRAME_WEIGHTS not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, ARTIFACT_FRAME_WEIGHTS, tmp)
        return FrameWeights.from_npz(Path(local))


def load_history(client: Any, run_id: str, keys: tuple[str, ...] = (METRIC_LOSS, metric_key("t2v", "R1"))
                 ) -> pd.DataFrame:
    """Per-epoch metric history: index = epoch (the step), one column per key present."""
    cols: dict[str, pd.Series] = {}
    for key in keys:
        hist = client.get_metric_history(run_id, key)
        if hist:
            s = pd.Series({h.step: h.value for h in sorted(hist, key=lambda h: (h.step, h.timestamp))})
            cols[key] = s
    df = pd.DataFrame(cols)
    df.index.name = "epoch"
    return df.sort_index()
