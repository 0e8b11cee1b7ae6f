"""Paper-table studies: every variant of a table (times seeds) trained once, resumably, in parallel.

The study is an Optuna ``GridSampler`` over the table's variants x seeds (:mod:`studies.grid`)
and no pruner. Each trial is one engine run; its value is the best epoch's text-to-video R@1.

Exactly-once, even with crashes and several workers:

- a worker that finds its cell already COMPLETE, or RUNNING under a lower trial number in a live
  worker, does not train: the trial ends PRUNED with ``duplicate_of`` (shown as DUPLICATE);
- RUNNING trials of dead workers are failed and their cells queued again (``studies.workers``);
- cells the sampler no longer hands out (the grid's trial numbers are used up) are queued with
  ``enqueue_trial``; a worker stops when every cell has a COMPLETE trial (or has failed
  ``max_failures`` times with an error), waiting for cells that live workers are still training.

The final coverage check lists, per cell, the trial that counts (the first COMPLETE) and any
duplicates.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import optuna

from harness.train.resources import Resources
from optuna.trial import FrozenTrial, TrialState

from harness.console import get_console
from harness.errors import ConfigError
from harness.tracking import RunTracker
from studies.context import (
    PARENT_ATTR,
    StudyContext,
    ensure_parent_run,
    finish_parent_run,
    mark_run_failed,
    resolve_callable,
    tracking_target,
)
from studies.engine_bridge import validate_config
from studies.gpus import WorkerPlan
from studies.grid import (
    GRID_SEED,
    Cell,
    Coverage,
    cell_of,
    count_complete_cells,
    coverage,
    grid_sampler,
    table_cells,
)
from studies.leaderboard import LiveBoard, leaderboard_rows, rows_to_json, trials_loader
from studies.trial import with_resources, run_trial
from studies.workers import is_stale, run_processes, start_worker, sweep_stale_trials, worker_logs

__all__ = [
    "DUPLICATE_TAG",
    "TableStudyResult",
    "finish_table_study",
    "prepare_table_study",
    "run_table_study",
    "run_table_worker",
    "table_title",
]

log = logging.getLogger("eabench.studies")

# Tag on the MLflow run of a duplicate trial: the run id of the cell's counting run.
DUPLICATE_TAG = "eabench.duplicate_of"


# --------------------------------------------------------------------------------------- launcher
def prepare_table_study(ctx: StudyContext, variants: Sequence[str], seeds: Sequence[int]) -> str:
    """Create (or reopen) the study and its MLflow parent run; returns the parent run id.

    Runs in the launcher before any worker starts, so the MLflow SQLite schema migration and the
    experiment/parent-run creation never race (STACK.md §2.1).
    """
    if not variants:
        raise ConfigError("the study has no variants; pass a table name or --variants a,b,c")
    if len(set(variants)) != len(variants):
        raise ConfigError(f"--variants lists a name twice: {', '.join(variants)}")
    if not seeds:
        raise ConfigError("--seeds must be at least 1")
    make_config = resolve_callable(ctx.config_factory)
    for v in variants:  # fail now, naming the variant, rather than once per trial later
        validate_config(make_config(ctx, v, int(seeds[0]), {}), ctx.nproc_per_trial)
    study = ctx.open_study(sampler=grid_sampler(variants, seeds), create=True)
    grid = {"variants": list(variants), "seeds": [int(s) for s in seeds]}
    old = study.user_attrs.get("grid")
    if old is not None and old != grid:
        raise ConfigError(
            f"study {ctx.study_name!r} in {ctx.storage.display} was created with a different grid "
            f"({len(old['variants'])} variants x seeds {old['seeds']}); give a new --study-name or the same "
            "variants and --seeds as before"
        )
    if old is None:
        study.set_user_attr("grid", grid)
        study.set_user_attr("kind", "table")
        study.set_user_attr("grid_seed", GRID_SEED)
        for key, value in (("table", ctx.table), ("dataset", ctx.dataset), ("protocol", ctx.protocol)):
            if value is not None:
                study.set_user_attr(key, value)
    return ensure_parent_run(ctx, study)


# ----------------------------------------------------------------------------------------- worker
def run_table_worker(
    ctx: StudyContext,
    variants: Sequence[str],
    seeds: Sequence[int],
    *,
    max_trials: int | None = None,
    wait_for_others: bool = True,
    poll_s: float = 1.0,
    max_failures: int = 2,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> int:
    """Claim and train cells until every cell is done; returns the number of trials this worker ran.

    The study must exist (``prepare_table_study``). ``max_trials`` bounds this worker's trials.
    """
    # one Resources for all trials of this worker: CLIP, frame caches and features load once
    trainer = with_resources(resolve_callable(ctx.trainer), Resources())
    make_config = resolve_callable(ctx.config_factory)
    cells = table_cells(variants, seeds)
    study = ctx.open_study(sampler=grid_sampler(variants, seeds), create=False)
    parent_run_id = study.user_attrs.get(PARENT_ATTR)
    ran = 0
    queued: dict[Cell, int] = {}

    def objective(trial: optuna.Trial) -> float:
        variant = trial.suggest_categorical("variant", list(variants))
        seed = int(trial.suggest_categorical("seed", [int(s) for s in seeds]))
        taken = _taken_by(study, trial.number, (variant, seed), stale_after_s=ctx.stale_after_s)
        if taken is not None:
            # Another trial owns this cell: record why and end without training.
            trial.set_user_attr("duplicate_of", taken)
            log.info("trial %d: %s seed %d is already taken by trial %d; skipped", trial.number, variant, seed,
                     taken)
            raise optuna.TrialPruned(f"cell taken by trial {taken}")
        log.info("trial %d: training %s seed %d", trial.number, variant, seed)
        return run_trial(trial, ctx, variant=variant, seed=seed, overrides=ctx.sets_dict,
                         parent_run_id=parent_run_id, trainer=trainer, make_config=make_config, prune=False)

    def after(study_: optuna.Study, frozen: FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(frozen)

    while max_trials is None or ran < max_trials:
        sweep_stale_trials(study, stale_after_s=ctx.stale_after_s, cell_key=cell_of,
                           on_swept=lambda s: mark_run_failed(ctx, s.mlflow_run_id, trial_number=s.number))
        trials = study.get_trials(deepcopy=False)
        cov = coverage(trials, cells, max_failures=max_failures)
        if cov.done:
            break
        open_cells = [c for c in cov.missing
                      if c not in cov.gave_up and c not in cov.running and c not in cov.waiting]
        # Trial numbers below the grid size get their cell from the sampler; later ones only get a
        # cell no trial ever started, so cells of failed trials must be queued explicitly.
        if open_cells and len(trials) >= len(cells):
            for c in open_cells:
                queued[c] = queued.get(c, 0) + 1
                if queued[c] > 3 * max(1, max_failures):  # a bug, not a state to wait out
                    raise RuntimeError(f"cell {c[0]}@{c[1]} was queued {queued[c]} times without a trial")
                study.enqueue_trial({"variant": c[0], "seed": c[1]}, user_attrs={"requeued": True})
            log.info("queued %d cell(s) without a finished trial: %s", len(open_cells),
                     ", ".join(f"{v}@{s}" for v, s in open_cells))
            continue
        if not open_cells and not cov.waiting:
            if not wait_for_others:
                break
            time.sleep(poll_s)  # cells are being trained by live workers; take over if they die
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[after], gc_after_trial=True)
        ran += 1
    return ran


def _taken_by(study: optuna.Study, number: int, cell: Cell, *, stale_after_s: float) -> int | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number == number or cell_of(t.params) != cell:
            continue
        if t.state == TrialState.COMPLETE:
            return t.number
        if t.number < number and not is_stale(t, stale_after_s=stale_after_s):
            return t.number
    return None


def _worker_process(ctx: StudyContext, variants: list[str], seeds: list[int], n_workers: int, index: int,
                    log_file: str | None = None, gpus: tuple[int, ...] | None = None) -> None:
    """Entry point of a spawned worker process (module level so spawn can import it)."""
    start_worker(index, n_workers, log_file, gpus)
    run_table_worker(ctx, variants, seeds)


def _run_workers(ctx: StudyContext, variants: list[str], seeds: list[int], layout: WorkerPlan, *, live: bool,
                 max_failures: int) -> list[int | None]:
    """The workers of ``layout``: one unpinned worker runs here, others (or any pinned to GPUs) are
    spawned processes. Returns their exit codes."""
    if layout.n_workers == 1 and not layout.pinned:
        run_table_worker(ctx, variants, seeds, max_failures=max_failures)
        return [0]
    n = layout.n_workers
    logs = worker_logs(ctx, n) if live else [None] * n
    if live:
        log.info("worker logs: %s", ", ".join(str(p) for p in logs))
    return run_processes(_worker_process,
                         [(ctx, variants, seeds, n, i, logs[i], layout.slots[i]) for i in range(n)],
                         [f"{ctx.study_name}-w{i}" for i in range(n)])


def table_title(ctx: StudyContext, variants: Sequence[str], seeds: Sequence[int]) -> str:
    """How the leaderboard names a table study."""
    return f"{ctx.study_name}: {len(variants)} variants x {len(seeds)} seed(s)"


@dataclass
class TableStudyResult:
    study_name: str
    storage: str
    parent_run_id: str | None
    coverage: Coverage
    trials: list[FrozenTrial]
    context: StudyContext | None = field(default=None, repr=False)
    title: str = ""
    experiment_id: str | None = None  # the MLflow experiment (for the runs-table URL)

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": self.storage,
            "mlflow_parent_run_id": self.parent_run_id,
            "coverage": self.coverage.to_dict(),
            "trials": rows_to_json(leaderboard_rows(self.trials)),
        }


def run_table_study(
    ctx: StudyContext,
    variants: Sequence[str],
    seeds: Sequence[int],
    *,
    workers: int | WorkerPlan = 1,
    board: bool = False,
    live: bool = False,
    max_failures: int = 2,
) -> TableStudyResult:
    """Launch a table study: prepare, run the workers, check coverage.

    ``workers``: a number of unpinned worker processes (1 = in this process), or a
    :class:`~studies.gpus.WorkerPlan` (GPUs per worker; its trials run ``ctx.nproc_per_trial``
    processes each). ``board`` shows the leaderboard on stderr while the study runs: redrawn in
    place when ``live`` (a terminal), else one log line per finished trial. With ``live`` the
    workers log to files ``<storage folder>/<study>.w<i>.log``, so their lines do not tear through
    the display.
    """
    variants, seeds = list(variants), [int(s) for s in seeds]
    layout = workers if isinstance(workers, WorkerPlan) else WorkerPlan((None,) * max(1, workers),
                                                                         ctx.nproc_per_trial)
    cells = table_cells(variants, seeds)
    parent = prepare_table_study(ctx, variants, seeds)
    study = ctx.open_study(sampler=grid_sampler(variants, seeds), create=False)
    # Sweep once here, before workers start, so they do not all race to re-queue the same cells.
    sweep_stale_trials(study, stale_after_s=ctx.stale_after_s, cell_key=cell_of,
                       on_swept=lambda s: mark_run_failed(ctx, s.mlflow_run_id, trial_number=s.number))
    display = LiveBoard(trials_loader(study), console=get_console(), live=live, title=table_title(ctx, variants, seeds),
                        total=len(cells), count_done=lambda trials: count_complete_cells(trials, cells)) \
        if board else nullcontext()
    if layout.n_workers > 1 or layout.pinned or layout.nproc_per_trial > 1:
        log.info("%s: %s", ctx.study_name, layout.describe())
    with display:
        codes = _run_workers(ctx, variants, seeds, layout, live=live, max_failures=max_failures)
        if any(codes):
            log.warning("finishing the cells of the failed worker(s) with one worker")
        # Coverage: whatever a crashed worker left behind is swept, queued and run by one worker.
        cov = coverage(study.get_trials(deepcopy=False), cells, max_failures=max_failures)
        if not cov.done:
            log.info("coverage: %d of %d cells missing; running them", len(cov.missing), len(cells))
            _run_workers(ctx, variants, seeds, WorkerPlan(layout.slots[:1], layout.nproc_per_trial), live=live,
                         max_failures=max_failures)
    return finish_table_study(ctx, study, variants, seeds, parent, max_failures=max_failures)


def finish_table_study(ctx: StudyContext, study: optuna.Study, variants: Sequence[str], seeds: Sequence[int],
                       parent: str | None, *, max_failures: int = 2) -> TableStudyResult:
    """Final coverage check; logs the leaderboard to the parent run and closes it when complete."""
    trials = study.get_trials(deepcopy=False)
    cells = table_cells(variants, seeds)
    cov = coverage(trials, cells, max_failures=max_failures)
    if cov.duplicates:
        log.warning("cells trained more than once (the first COMPLETE trial counts): %s",
                    ", ".join(f"{v}@{s}: {ns}" for (v, s), ns in cov.duplicates.items()))
        _tag_duplicate_runs(ctx, trials, cov)
    if cov.missing:
        log.warning("coverage: %d of %d cells have no COMPLETE trial: %s", len(cov.missing), len(cells),
                    ", ".join(f"{v}@{s}" for v, s in cov.missing))
    else:
        log.info("coverage: all %d cells have exactly one counting COMPLETE trial", len(cells))
    result = TableStudyResult(ctx.study_name, ctx.storage.display, parent, cov, list(trials), ctx,
                              table_title(ctx, variants, seeds), tracking_target(ctx).experiment_id if parent else None)
    if parent and not (cov.missing and cov.running):  # other workers still busy: leave it open
        rows = rows_to_json(leaderboard_rows(trials))
        finish_parent_run(
            ctx, parent,
            status="FINISHED" if not cov.missing else "FAILED",
            metrics={"study/cells": len(cells), "study/complete": len(cov.complete),
                     "study/missing": len(cov.missing), "study/duplicates": sum(map(len, cov.duplicates.values()))},
            json_artifacts={"leaderboard.json": rows, "coverage.json": cov.to_dict()},
        )
    return result


def _tag_duplicate_runs(ctx: StudyContext, trials: Sequence[FrozenTrial], cov: Coverage) -> None:
    """Tag the MLflow runs of duplicate trials ``DUPLICATE_TAG=<counting run id>``.

    Reports read finished child runs by study tag; the tag lets them keep one run per cell.
    """
    by_number = {t.number: t for t in trials}
    try:
        target = tracking_target(ctx)
        for cell, numbers in cov.duplicates.items():
            first = by_number[cov.complete[cell]].user_attrs.get("mlflow_run_id", "")
            for n in numbers:
                run_id = by_number[n].user_attrs.get("mlflow_run_id")
                if run_id:
                    RunTracker(target, run_id).set_tags({DUPLICATE_TAG: first})
    except Exception as exc:  # noqa: BLE001 - tagging is a courtesy to reports, never fatal
        log.warning("could not tag duplicate runs: %s", exc)
