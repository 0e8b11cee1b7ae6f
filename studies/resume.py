"""A retried trial continues the run its failed predecessor left behind.

A trial whose worker died (swept and re-queued, ``retry_of``) or whose run failed (a table cell
queued again) leaves its MLflow run FAILED or KILLED with ``last.pt`` kept in the run's checkpoint
folder. When the same cell is trained again, :func:`resumable_run` finds that run and the trial
trains with ``TrainConfig.resume`` set: the engine loads the saved model, optimiser, scheduler,
RNG and epoch history and goes on from the next epoch, in the same MLflow run (its trial tag then
names the new trial). Nothing trained before the failure is trained again.

A predecessor is used only when it is a FAIL trial of the same study with the same parameters,
its run is not RUNNING in MLflow (a live process never shares its checkpoint) and its checkpoint
file is there; a diverged run is not resumed (it would diverge again). A trainer whose config has
no ``resume`` field (a user's own trainer) always starts fresh.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.train import checkpoints as ckpt
from harness.train.schema import TAG_STUDY, TAG_TRIAL
from studies.context import StudyContext, tracking_target

__all__ = ["RESUMED_ATTR", "can_resume", "resumable_run", "trial_runs"]

log = logging.getLogger("eabench.studies")

RESUMED_ATTR = "resumed_run"     # trial user attribute: the MLflow run this trial continued
_ENDED = ("FAILED", "KILLED")


def can_resume(cfg: Any) -> bool:
    """Whether ``cfg`` is an engine config that can carry a resume (and does not already)."""
    return dataclasses.is_dataclass(cfg) and hasattr(cfg, "resume") and not cfg.resume


def trial_runs(ctx: StudyContext, number: int) -> list[tuple[str, str]]:
    """``(run_id, status)`` of the MLflow runs tagged with this study and trial ``number``."""
    from mlflow.tracking import MlflowClient

    target = tracking_target(ctx)
    client = MlflowClient(tracking_uri=target.uri)
    found = client.search_runs([target.experiment_id],
                               filter_string=f"tags.`{TAG_STUDY}` = '{ctx.study_name}' and "
                                             f"tags.`{TAG_TRIAL}` = '{number}'")
    return [(r.info.run_id, r.info.status) for r in found]


def resumable_run(trial: optuna.Trial, ctx: StudyContext, cfg: Any) -> str | None:
    """The run of the latest failed trial of the same cell that can be continued, else None."""
    if not can_resume(cfg):
        return None
    params = dict(trial.params)
    earlier = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.number < trial.number and dict(t.params) == params
               and not str(t.user_attrs.get("error", "")).startswith("TrainingDiverged")]
    for t in sorted(earlier, key=lambda t: t.number, reverse=True):
        try:
            runs = trial_runs(ctx, t.number)
        except Exception as exc:  # noqa: BLE001 - no tracking store to ask: train from scratch
            log.warning("trial %d: could not look up the runs of failed trial %d (%s); training from scratch",
                        trial.number, t.number, exc)
            return None
        for run_id, status in runs:
            if status in _ENDED and (ckpt.checkpoint_dir(cfg.tracking_root, run_id) / ckpt.LAST).is_file():
                return run_id
    return None
