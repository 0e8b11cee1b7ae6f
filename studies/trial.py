"""One Optuna trial = one training run of the engine, with its bookkeeping in the trial.

Shared by table and search studies. The trial records its worker (for the sweeper), keeps a
heartbeat thread beating while it trains (:class:`studies.liveness.Heartbeat`), stores the last
epoch's metrics and the count of skipped (non-finite) steps after every epoch (the live
leaderboard reads them), optionally reports T2V R@1 to the pruner, and finally stores the MLflow
run id and the best epoch's metrics as user attributes. The objective value is the best epoch's
T2V R@1. With ``ctx.nproc_per_trial`` > 1 the run is a torchrun job (:mod:`studies.torchrun`).
A trial that retries a failed one continues its run from ``last.pt`` (:mod:`studies.resume`).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from harness.presets import get_preset, override
from harness.tracking import resolve_uri
from harness.train.schema import DIRECTIONS, METRIC_SKIPPED, TAG_SEED, TAG_STUDY, TAG_TRIAL, best_key, metric_key
from studies.context import StudyContext
from studies.liveness import Heartbeat, worker_attrs
from studies.resume import RESUMED_ATTR, resumable_run

__all__ = ["OBJECTIVE", "OBJECTIVE_BEST_KEY", "OBJECTIVE_KEY", "run_trial"]

log = logging.getLogger("eabench.studies")

# Every study maximises text-to-video R@1, the metric training also picks its best epoch by.
OBJECTIVE: tuple[str, str] = ("t2v", "R1")
OBJECTIVE_KEY = metric_key(*OBJECTIVE)          # per epoch, as on_epoch reports it
OBJECTIVE_BEST_KEY = best_key(*OBJECTIVE)       # the best epoch's value, as MLflow holds it
_PER_DIRECTION = tuple(f"{d}/" for d in DIRECTIONS)


def _as_plain(d: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def with_resources(trainer: Callable[..., Any], resources: Any) -> Callable[..., Any]:
    """``trainer`` with ``resources=`` bound when it declares that keyword (the engine's
    ``run_training`` does: CLIP, frame caches and frozen features then load once per worker);
    other trainers (tests' fakes, user functions) are returned unchanged."""
    try:
        params = inspect.signature(trainer).parameters
    except (TypeError, ValueError):
        return trainer
    # Only a declared `resources` parameter: a **kwargs wrapper may hand it on to a function that
    # does not take it.
    if "resources" in params:
        return functools.partial(trainer, resources=resources)
    return trainer


def run_trial(
    trial: optuna.Trial,
    ctx: StudyContext,
    *,
    variant: str,
    seed: int,
    overrides: Mapping[str, str],
    parent_run_id: str | None,
    trainer: Callable[..., Any],
    make_config: Callable[..., Any],
    prune: bool = False,
    on_epoch_hook: Callable[[int, dict[str, float]], None] | None = None,
) -> float:
    """Train ``variant`` with ``seed`` and the preset ``overrides``; return best T2V R@1."""
    for key, value in worker_attrs().items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("variant", variant)
    trial.set_user_attr("seed", int(seed))
    if overrides:
        trial.set_user_attr("overrides", dict(overrides))
    cfg = make_config(ctx, variant, int(seed), dict(overrides))
    epochs = _total_epochs(ctx, cfg, overrides)
    if epochs:
        trial.set_user_attr("epochs", epochs)  # the leaderboard's per-trial progress bar

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        plain = _as_plain(metrics)
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("last_epoch", int(epoch))
        if plain.get(METRIC_SKIPPED):  # cumulative over the run
            trial.set_user_attr("skipped_steps", int(plain[METRIC_SKIPPED]))
        trial.set_user_attr("last_metrics", {k: v for k, v in plain.items() if k.startswith(_PER_DIRECTION)})
        run_id = metrics.get("run_id") if isinstance(metrics, Mapping) else None
        if run_id and "mlflow_run_id" not in trial.user_attrs:
            trial.set_user_attr("mlflow_run_id", str(run_id))
        if on_epoch_hook is not None:
            on_epoch_hook(epoch, plain)
        if prune and OBJECTIVE_KEY in plain:
            trial.report(plain[OBJECTIVE_KEY], step=int(epoch))
            if trial.should_prune():
                log.info("trial %d (%s) pruned after epoch %d: T2V R@1=%.2f", trial.number, variant, epoch,
                         plain[OBJECTIVE_KEY])
                trial.set_user_attr("pruned_at_epoch", int(epoch))
                raise optuna.TrialPruned(f"T2V R@1 {plain[OBJECTIVE_KEY]:.2f} at epoch {epoch}")

    tags = {TAG_STUDY: ctx.study_name, TAG_TRIAL: str(trial.number), TAG_SEED: str(seed)}
    run_name = f"{ctx.study_name}/t{trial.number:04d}-{variant}-s{seed}"
    if ctx.nproc_per_trial > 1:
        from studies.torchrun import run_torchrun_trial

        workdir = Path(ctx.runs_root) / "studies" / "jobs" / f"{ctx.study_name}-t{trial.number:04d}"
        trainer = functools.partial(run_torchrun_trial, nproc=ctx.nproc_per_trial, trainer=ctx.trainer,
                                    workdir=workdir)
    resume = resumable_run(trial, ctx, cfg)
    epochs_seen: list[int] = []

    def counted(epoch: int, metrics: dict[str, Any]) -> None:
        epochs_seen.append(int(epoch))
        on_epoch(epoch, metrics)

    def train(config: Any) -> Any:
        with Heartbeat(trial, ctx.heartbeat_interval_s):
            return trainer(config, on_epoch=counted, parent_run_id=parent_run_id, run_name=run_name,
                           tags=tags, tracking_uri=_tracking_uri(ctx))

    try:
        if resume:
            log.info("trial %d: continuing MLflow run %s of an earlier failed trial from its last.pt",
                     trial.number, resume)
            trial.set_user_attr(RESUMED_ATTR, resume)
            try:
                result = train(dataclasses.replace(cfg, resume=resume))
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                if epochs_seen:  # the resumed run trained and then failed: a real failure of this trial
                    raise
                # The checkpoint could not be continued (damaged, from another version...): start over.
                log.warning("trial %d: run %s could not be continued (%s: %s); training from scratch",
                            trial.number, resume, type(exc).__name__, exc)
                trial.set_user_attr("resume_error", f"{type(exc).__name__}: {exc}"[:500])
                result = train(cfg)
        else:
            result = train(cfg)
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
        raise
    trial.set_user_attr("mlflow_run_id", str(result.run_id))
    skipped = int(getattr(result, "skipped_steps", 0) or 0)
    if skipped or "skipped_steps" in trial.user_attrs:
        trial.set_user_attr("skipped_steps", skipped)
    best = {d: _as_plain(getattr(result, d)) for d in DIRECTIONS}  # the best epoch's metrics
    for direction, values in best.items():
        trial.set_user_attr(direction, values)
    trial.set_user_attr("best_epoch", int(result.best_epoch))
    direction, metric = OBJECTIVE
    if metric not in best[direction]:
        raise ValueError(f"trainer returned no {OBJECTIVE_KEY} for {variant} (got {direction} keys "
                         f"{sorted(best[direction])})")
    return best[direction][metric]


def _total_epochs(ctx: StudyContext, cfg: Any, overrides: Mapping[str, str]) -> int | None:
    epochs = getattr(cfg, "epochs", None)
    if isinstance(epochs, int):
        return epochs
    try:
        return int(override(get_preset(ctx.dataset), {**ctx.sets_dict, **dict(overrides)}).epochs)
    except Exception:  # noqa: BLE001 - only cosmetic: the bar then has no total
        return None


def _tracking_uri(ctx: StudyContext) -> str:
    return resolve_uri(ctx.runs_root, ctx.tracking_uri)
