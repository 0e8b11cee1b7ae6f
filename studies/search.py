"""Hyperparameter search: TPE over variants and training hyperparameters, with median pruning.

Sampler: ``TPESampler`` with Optuna 5's defaults (multivariate, constant liar, so parallel
workers do not propose what others are already training), a distinct seed per worker
(``seed + worker index``), and ``group=True`` when the space is conditional (ratios exist only
for designs with that block). Pruner: ``MedianPruner(n_startup_trials, n_warmup_steps=1)`` on
the per-epoch text-to-video R@1: epoch 0 is never pruned (R@1 is noisy there). A pruned trial's
MLflow run ends KILLED (the engine does it when ``optuna.TrialPruned`` leaves ``on_epoch``).

The default space and the ``--space`` file format are documented in :mod:`studies.space`.
At the end the study reports the best trial, its parameters, the ``eabench train`` command that
retrains it, and each parameter's importance (``optuna.importance.get_param_importances``,
Optuna 5's default PED-ANOVA evaluator), printed and logged to the study's MLflow parent run.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import optuna

from harness.train.resources import Resources
from optuna.trial import FrozenTrial, TrialState

from harness.console import get_console
from harness.errors import ConfigError
from studies.context import (
    PARENT_ATTR,
    StudyContext,
    ensure_parent_run,
    finish_parent_run,
    mark_run_failed,
    resolve_callable,
    tracking_target,
)
from studies.engine_bridge import format_override, retrain_command, validate_config
from studies.gpus import WorkerPlan
from studies.leaderboard import LiveBoard, leaderboard_rows, rows_to_json, trials_loader
from studies.space import SearchSpace
from studies.trial import with_resources, OBJECTIVE_BEST_KEY, run_trial
from studies.workers import run_processes, start_worker, sweep_stale_trials, worker_logs

__all__ = [
    "SearchResult",
    "SearchSettings",
    "make_pruner",
    "make_sampler",
    "prepare_search_study",
    "run_search_study",
    "run_search_worker",
    "search_title",
    "summarize_search",
]

log = logging.getLogger("eabench.studies")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs: the space, its budget and the sampler/pruner settings."""

    space: SearchSpace
    n_trials: int = 20
    timeout_s: float | None = None
    seed: int = 42                   # training seed of every trial (the search compares configs)
    sampler_seed: int = 0            # worker i uses sampler_seed + i
    n_startup_trials: int = 5        # random trials before TPE, and completed trials before pruning
    n_warmup_steps: int = 1


def make_sampler(settings: SearchSettings, worker_index: int = 0) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=settings.sampler_seed + worker_index,
                                      n_startup_trials=settings.n_startup_trials,
                                      group=settings.space.conditional)


def make_pruner(settings: SearchSettings) -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=settings.n_startup_trials,
                                       n_warmup_steps=settings.n_warmup_steps)


def prepare_search_study(ctx: StudyContext, settings: SearchSettings) -> str:
    """Create (or reopen) the study and its MLflow parent run (launcher only, before workers)."""
    make_config = resolve_callable(ctx.config_factory)
    try:
        example = settings.space.example_variant()
    except ValueError as exc:
        raise ConfigError(f"the search space cannot build a variant: {exc}") from None
    # Wrong --root, missing weights, unknown preset fields: fail here, not once per trial.
    validate_config(make_config(ctx, example, settings.seed,
                                {k: str(v) for k, v in settings.space.fixed}), ctx.nproc_per_trial)
    study = ctx.open_study(sampler=make_sampler(settings), pruner=make_pruner(settings), create=True)
    described = settings.space.describe()
    old = study.user_attrs.get("space")
    if old is not None and [tuple(x) for x in old] != described:
        raise ConfigError(
            f"study {ctx.study_name!r} in {ctx.storage.display} was created with another search space; "
            "give a new --study-name or the same --variants/--space as before"
        )
    if old is None:
        study.set_user_attr("kind", "search")
        study.set_user_attr("space", described)
        study.set_user_attr("dataset", ctx.dataset)
        study.set_user_attr("protocol", ctx.protocol)
        study.set_user_attr("sampler", {"name": "TPESampler", "seed": settings.sampler_seed,
                                        "n_startup_trials": settings.n_startup_trials,
                                        "group": settings.space.conditional})
        study.set_user_attr("pruner", {"name": "MedianPruner", "n_startup_trials": settings.n_startup_trials,
                                       "n_warmup_steps": settings.n_warmup_steps})
    return ensure_parent_run(ctx, study, tags={"optuna.sampler": "TPESampler", "optuna.pruner": "MedianPruner"})


def _remaining(study: optuna.Study, n_trials: int) -> int:
    done = len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,)))
    return max(0, n_trials - done)


def run_search_worker(ctx: StudyContext, settings: SearchSettings, *, worker_index: int = 0,
                      n_trials: int | None = None,
                      on_trial: Callable[[FrozenTrial], None] | None = None) -> int:
    """Run trials until ``n_trials`` (this worker's share; default: what the budget has left)."""
    # one Resources for all trials of this worker: CLIP, frame caches and features load once
    trainer = with_resources(resolve_callable(ctx.trainer), Resources())
    make_config = resolve_callable(ctx.config_factory)
    study = ctx.open_study(sampler=make_sampler(settings, worker_index), pruner=make_pruner(settings),
                           create=False)
    parent_run_id = study.user_attrs.get(PARENT_ATTR)
    sweep_stale_trials(study, stale_after_s=ctx.stale_after_s, requeue=False,
                       on_swept=lambda s: mark_run_failed(ctx, s.mlflow_run_id, trial_number=s.number))
    budget = _remaining(study, settings.n_trials) if n_trials is None else n_trials
    if budget <= 0:
        return 0

    def objective(trial: optuna.Trial) -> float:
        variant, values = settings.space.suggest(trial)
        overrides = {k: format_override(v) for k, v in values.items()}
        log.info("trial %d: %s %s", trial.number, variant, " ".join(f"{k}={v}" for k, v in overrides.items()))
        return run_trial(trial, ctx, variant=variant, seed=settings.seed, overrides=overrides,
                         parent_run_id=parent_run_id, trainer=trainer, make_config=make_config, prune=True)

    def stop_at_budget(study_: optuna.Study, frozen: FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(frozen)
        # Other workers count too: stop once the study as a whole has its n_trials.
        if len(study_.get_trials(deepcopy=False, states=FINISHED)) >= settings.n_trials:
            study_.stop()

    study.optimize(objective, n_trials=budget, timeout=settings.timeout_s, catch=(Exception,),
                   callbacks=[stop_at_budget], gc_after_trial=True)
    return budget


def _worker_process(ctx: StudyContext, settings: SearchSettings, n_workers: int, index: int, share: int,
                    log_file: str | None = None, gpus: tuple[int, ...] | None = None) -> None:
    start_worker(index, n_workers, log_file, gpus)
    log.info("worker %d: %d trials", index + 1, share)
    run_search_worker(ctx, settings, worker_index=index, n_trials=share)


@dataclass
class SearchResult:
    study_name: str
    storage: str
    parent_run_id: str | None
    best: dict[str, Any] | None
    importances: dict[str, float]
    trials: list[FrozenTrial]
    context: StudyContext | None = field(default=None, repr=False)
    title: str = ""
    experiment_id: str | None = None  # the MLflow experiment (for the runs-table URL)

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study_name, "storage": self.storage, "mlflow_parent_run_id": self.parent_run_id,
                "best": self.best, "importances": self.importances,
                "trials": rows_to_json(leaderboard_rows(self.trials))}


def search_title(ctx: StudyContext, settings: SearchSettings) -> str:
    """How the leaderboard names a search."""
    return f"{ctx.study_name}: TPE search, {settings.n_trials} trials"


def run_search_study(ctx: StudyContext, settings: SearchSettings, *, workers: int | WorkerPlan = 1,
                     board: bool = False, live: bool = False) -> SearchResult:
    """Launch a search: prepare, run the workers, then summarise.

    ``workers``, ``board`` and ``live`` as in :func:`studies.table.run_table_study`.
    """
    layout = workers if isinstance(workers, WorkerPlan) else WorkerPlan((None,) * max(1, workers),
                                                                         ctx.nproc_per_trial)
    parent = prepare_search_study(ctx, settings)
    study = ctx.open_study(sampler=make_sampler(settings), pruner=make_pruner(settings), create=False)
    sweep_stale_trials(study, stale_after_s=ctx.stale_after_s, requeue=False,
                       on_swept=lambda s: mark_run_failed(ctx, s.mlflow_run_id, trial_number=s.number))
    remaining = _remaining(study, settings.n_trials)
    display = LiveBoard(trials_loader(study), console=get_console(), live=live, title=search_title(ctx, settings),
                        total=settings.n_trials, show_params=True) if board else nullcontext()
    n = layout.n_workers
    if n > 1 or layout.pinned or layout.nproc_per_trial > 1:
        log.info("%s: %s", ctx.study_name, layout.describe())
    with display:
        if remaining > 0 and n == 1 and not layout.pinned:
            run_search_worker(ctx, settings, worker_index=0, n_trials=remaining)
        elif remaining > 0:
            shares = [remaining // n + (1 if i < remaining % n else 0) for i in range(n)]
            active = [i for i in range(n) if shares[i] > 0]
            logs = worker_logs(ctx, n) if live else [None] * n
            if live:
                log.info("worker logs: %s", ", ".join(str(logs[i]) for i in active))
            run_processes(_worker_process,
                          [(ctx, settings, len(active), i, shares[i], logs[i], layout.slots[i]) for i in active],
                          [f"{ctx.study_name}-w{i}" for i in active])
    return summarize_search(ctx, study, settings, parent)


def summarize_search(ctx: StudyContext, study: optuna.Study, settings: SearchSettings,
                     parent: str | None) -> SearchResult:
    """Best trial, its retrain command and parameter importances; logged to the parent run."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best: dict[str, Any] | None = None
    if complete:
        bt = max(complete, key=lambda t: (t.value, -t.number))
        variant = bt.user_attrs.get("variant", "?")
        overrides = dict(bt.user_attrs.get("overrides") or {})
        best = {
            "number": bt.number,
            "value": bt.value,
            "variant": variant,
            "params": dict(bt.params),
            "overrides": overrides,
            "t2v": bt.user_attrs.get("t2v"),
            "v2t": bt.user_attrs.get("v2t"),
            "mlflow_run_id": bt.user_attrs.get("mlflow_run_id"),
            "command": retrain_command(ctx, variant, settings.seed, overrides),
        }
    importances = _importances(study)
    counts = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                  TrialState.FAIL, TrialState.RUNNING)}
    if best:
        log.info("best trial %d: T2V R@1 %.2f, %s", best["number"], best["value"], best["variant"])
        log.info("retrain it with: %s", best["command"])
    for name, value in importances.items():
        log.info("importance of %s: %.3f", name, value)
    result = SearchResult(ctx.study_name, ctx.storage.display, parent, best, importances, list(trials), ctx,
                          search_title(ctx, settings), tracking_target(ctx).experiment_id if parent else None)
    if parent:
        metrics = {f"importance/{k}": v for k, v in importances.items()}
        metrics.update({f"study/{k.lower()}": float(v) for k, v in counts.items()})
        if best:
            metrics[OBJECTIVE_BEST_KEY] = float(best["value"])
        tags = {"best_trial": str(best["number"]), "best_variant": best["variant"],
                "best_command": best["command"], "best_run_id": str(best["mlflow_run_id"])} if best else {}
        finish_parent_run(
            ctx, parent, status=None if counts["RUNNING"] else "FINISHED",  # others still busy: leave open
            metrics=metrics, tags=tags,
            json_artifacts={"best.json": best or {}, "importances.json": importances,
                            "leaderboard.json": rows_to_json(leaderboard_rows(trials))},
        )
    return result


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # too few or identical trials
        log.info("parameter importances not available: %s", exc)
        return {}
