"""One Optuna trial = one training run of the engine, with its bookkeeping in the trial.

Shared by table and search studies. The trial records its worker (for the sweeper), refreshes
a heartbeat and the last epoch's metrics after every epoch (the live leaderboard reads them),
optionally reports T2V R@1 to the pruner, and finally stores the MLflow run id and the best
epoch's metrics as user attributes. The objective value is the best epoch's T2V R@1.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from studies.context import StudyContext
from studies.workers import worker_attrs

__all__ = ["OBJECTIVE_KEY", "run_trial"]

log = logging.getLogger("eabench.studies")

OBJECTIVE_KEY = "t2v/R1"


def _as_plain(d: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


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
        trial.set_user_attr("last_metrics", {k: v for k, v in plain.items() if k.startswith(("t2v/", "v2t/"))})
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

    tags = {"optuna.study": ctx.study_name, "optuna.trial": str(trial.number), "seed": str(seed)}
    run_name = f"{ctx.study_name}/t{trial.number:04d}-{variant}-s{seed}"
    try:
        result = trainer(cfg, on_epoch=on_epoch, parent_run_id=parent_run_id, run_name=run_name,
                         tags=tags, tracking_uri=_tracking_uri(ctx))
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
        raise
    trial.set_user_attr("mlflow_run_id", str(result.run_id))
    t2v, v2t = _as_plain(result.t2v), _as_plain(result.v2t)
    trial.set_user_attr("t2v", t2v)
    trial.set_user_attr("v2t", v2t)
    trial.set_user_attr("best_epoch", int(result.best_epoch))
    if "R1" not in t2v:
        raise ValueError(f"trainer returned no T2V R1 for {variant} (got keys {sorted(t2v)})")
    return t2v["R1"]


def _total_epochs(ctx: StudyContext, cfg: Any, overrides: Mapping[str, str]) -> int | None:
    epochs = getattr(cfg, "epochs", None)
    if isinstance(epochs, int):
        return epochs
    try:
        from harness.presets import get_preset, override

        return int(override(get_preset(ctx.dataset), {**ctx.sets_dict, **dict(overrides)}).epochs)
    except Exception:  # noqa: BLE001 - only cosmetic: the bar then has no total
        return None


def _tracking_uri(ctx: StudyContext) -> str:
    from harness.tracking import resolve_uri

    return resolve_uri(ctx.runs_root, ctx.tracking_uri)
