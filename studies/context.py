"""What every worker of a study shares: the study's settings, its MLflow parent run, the trainer.

A :class:`StudyContext` is a frozen, picklable value: the launcher builds it once and hands it
to worker processes (``multiprocessing`` spawn), and a worker on another host rebuilds the same
value from the same command line. The trainer and the config factory are module-level callables
(so they pickle by reference); they default to the engine, tests inject small fakes.
"""
from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from harness.tracking import DEFAULT_EXPERIMENT, RunTracker, TrackingTarget, configure, git_commit, redact_uri
from harness.train import Protocol
from harness.train.schema import (
    KIND_STUDY,
    TAG_DATASET,
    TAG_KIND,
    TAG_PAPER_TABLE,
    TAG_PROTOCOL,
    TAG_STUDY,
    TAG_TRIAL,
)
from studies.storage import StorageSpec, open_storage
from studies.liveness import DEFAULT_STALE_AFTER_S, heartbeat_interval

__all__ = [
    "DEFAULT_CONFIG_FACTORY",
    "DEFAULT_TRAINER",
    "PARENT_ATTR",
    "ConfigFactory",
    "StudyContext",
    "Trainer",
    "ensure_parent_run",
    "finish_parent_run",
    "load_study",
    "mark_run_failed",
    "resolve_callable",
    "tracking_target",
]

log = logging.getLogger("eabench.studies")

# Study user attribute holding the MLflow parent run id, so reruns and other workers reuse it.
PARENT_ATTR = "mlflow_parent_run_id"

Trainer = Callable[..., Any]            # run_training(cfg, *, on_epoch, parent_run_id, run_name, tags, tracking_uri)
ConfigFactory = Callable[..., Any]      # make_config(ctx, variant, seed, overrides) -> cfg
DEFAULT_TRAINER = "harness.train:run_training"
DEFAULT_CONFIG_FACTORY = "studies.engine_bridge:make_config"


@dataclass(frozen=True)
class StudyContext:
    """Settings shared by all workers of one study.

    ``sets`` are ``--set key=value`` preset overrides applied to every trial (strings, the
    preset's own types are restored by ``harness.presets.override``). ``trainer`` and
    ``config_factory`` are ``module:function`` references, resolved in each process.
    """

    study_name: str
    kind: str                                   # "table" | "search"
    storage: StorageSpec
    dataset: str
    root: str
    protocol: str = Protocol.FROZEN.value
    runs_root: str = "runs"
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    sets: tuple[tuple[str, str], ...] = ()
    table: str | None = None
    trainer: Any = DEFAULT_TRAINER            # "module:function" or a module-level function
    config_factory: Any = DEFAULT_CONFIG_FACTORY
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    train_options: tuple[tuple[str, Any], ...] = ()   # TrainConfig fields for every trial (epochs, device...)
    extra_tags: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    nproc_per_trial: int = 1                  # > 1: each trial is a torchrun job of this many processes

    @property
    def sets_dict(self) -> dict[str, str]:
        return dict(self.sets)

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a running trial beats: several beats fit in ``stale_after_s``."""
        return heartbeat_interval(self.stale_after_s)

    def open_study(self, *, sampler: optuna.samplers.BaseSampler | None = None,
                   pruner: optuna.pruners.BasePruner | None = None, create: bool = True) -> optuna.Study:
        return load_study(self, sampler=sampler, pruner=pruner, create=create)

    def resolve_trainer(self) -> Trainer:
        return resolve_callable(self.trainer)

    def resolve_config_factory(self) -> ConfigFactory:
        return resolve_callable(self.config_factory)


def resolve_callable(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (callables pass through)."""
    if callable(ref):
        return ref
    if ":" not in ref:
        raise ValueError(f"callable reference {ref!r} must look like 'package.module:function'")
    mod_name, attr = ref.split(":", 1)
    obj: Any = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_study(ctx: StudyContext, *, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None, create: bool = True) -> optuna.Study:
    """Open (or create) the study; the sampler/pruner are not stored, every worker passes its own."""
    storage = open_storage(ctx.storage)
    if create:
        return optuna.create_study(storage=storage, study_name=ctx.study_name, sampler=sampler, pruner=pruner,
                                   direction="maximize", load_if_exists=True)
    return optuna.load_study(storage=storage, study_name=ctx.study_name, sampler=sampler, pruner=pruner)


def tracking_target(ctx: StudyContext) -> TrackingTarget:
    return configure(Path(ctx.runs_root), ctx.tracking_uri, ctx.experiment)


def ensure_parent_run(ctx: StudyContext, study: optuna.Study, tags: Mapping[str, Any] | None = None) -> str:
    """The study's MLflow parent run: reused when the study already names one, else created.

    Only launchers call this (before their workers start). Launchers on several hosts started at
    once may each create one: every launcher then keeps the oldest RUNNING parent run of the study
    created in the last minutes (ties: the smaller run id) and deletes its own if it lost, so all
    hosts agree on one parent.
    """
    target = tracking_target(ctx)
    existing = study.user_attrs.get(PARENT_ATTR)
    if existing:
        try:
            RunTracker.resume(target, existing)
            log.info("continuing study %s (MLflow parent run %s)", ctx.study_name, existing)
            return str(existing)
        except Exception as exc:  # noqa: BLE001 - the parent was deleted from MLflow: start a fresh one
            log.warning("parent run %s of study %s not found in %s (%s); creating a new one",
                        existing, ctx.study_name, redact_uri(target.uri), exc)
    all_tags = {
        TAG_KIND: KIND_STUDY,
        TAG_STUDY: ctx.study_name,
        "optuna.storage": ctx.storage.display,
        "study.kind": ctx.kind,
        TAG_DATASET: ctx.dataset,
        TAG_PROTOCOL: ctx.protocol,
        "git_commit": git_commit(),
        **({TAG_PAPER_TABLE: ctx.table, "table": ctx.table} if ctx.table else {}),
        **dict(ctx.extra_tags),
        **dict(tags or {}),
    }
    tracker = RunTracker.start(target, run_name=ctx.study_name, tags=all_tags)
    winner = _first_parent(target, ctx.study_name) or tracker.run_id
    if winner != tracker.run_id:  # another host's launcher created one at the same time
        tracker.client.delete_run(tracker.run_id)
        log.info("study %s: using MLflow parent run %s created by another launcher", ctx.study_name, winner)
        study.set_user_attr(PARENT_ATTR, winner)
        return winner
    tracker.log_params({"data_root": ctx.root, **{f"set.{k}": v for k, v in ctx.sets}})
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    return tracker.run_id


_RACE_WINDOW_MS = 10 * 60 * 1000


def _first_parent(target: TrackingTarget, study_name: str) -> str | None:
    """The oldest RUNNING parent run of ``study_name`` started in the last minutes (launchers' race)."""
    import time

    from mlflow.tracking import MlflowClient

    since = int(time.time() * 1000) - _RACE_WINDOW_MS
    runs = MlflowClient(tracking_uri=target.uri).search_runs(
        [target.experiment_id],
        filter_string=(f"tags.`{TAG_KIND}` = '{KIND_STUDY}' and tags.`{TAG_STUDY}` = '{study_name}' and "
                       f"attributes.status = 'RUNNING' and attributes.start_time >= {since}"))
    if not runs:
        return None
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id


def finish_parent_run(ctx: StudyContext, run_id: str, *, status: str | None = "FINISHED",
                      metrics: Mapping[str, float] | None = None, tags: Mapping[str, Any] | None = None,
                      json_artifacts: Mapping[str, Any] | None = None,
                      text_artifacts: Mapping[str, str] | None = None) -> None:
    """Log the study's summary to its parent run and close it (``status=None`` leaves it open)."""
    tracker = RunTracker(tracking_target(ctx), run_id)
    if tags:
        tracker.set_tags(dict(tags))
    if metrics:
        tracker.log_metrics({k: float(v) for k, v in metrics.items()})
    for name, obj in (json_artifacts or {}).items():
        tracker.log_json(obj, name)
    for name, text in (text_artifacts or {}).items():
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / Path(name).name
            p.write_text(text)
            parent = str(Path(name).parent)
            tracker.log_artifact(p, None if parent == "." else parent)
    if status is not None:
        tracker.end(status)


def mark_run_failed(ctx: StudyContext, run_id: str | None, status: str = "FAILED", *,
                    trial_number: int | None = None) -> None:
    """End the child run of a trial whose worker died (else MLflow shows it RUNNING forever).

    The engine reports its run id only when training ends, so a killed trial's run is usually
    found by its tags (``optuna.study``, ``optuna.trial``) instead of by id.
    """
    try:
        from mlflow.tracking import MlflowClient  # seconds to import; harness.tracking defers it too

        target = tracking_target(ctx)
        client = MlflowClient(tracking_uri=target.uri)
        ids: list[str] = [run_id] if run_id else []
        if not ids and trial_number is not None:
            found = client.search_runs(
                [target.experiment_id],
                filter_string=(f"tags.`{TAG_STUDY}` = '{ctx.study_name}' and "
                               f"tags.`{TAG_TRIAL}` = '{trial_number}' and attributes.status = 'RUNNING'"),
            )
            ids = [r.info.run_id for r in found]
        for rid in ids:
            if client.get_run(rid).info.status == "RUNNING":
                client.set_terminated(rid, status=status)
                log.info("MLflow run %s of dead trial %s marked %s", rid, trial_number, status)
    except Exception as exc:  # noqa: BLE001 - best effort: the Optuna state is the source of truth
        log.debug("could not end MLflow run of trial %s: %s", trial_number, exc)
