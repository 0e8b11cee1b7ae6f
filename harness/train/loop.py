"""The training loop: ``run_training`` (setup, then per epoch: train, evaluate, checkpoint, log).

Reads top to bottom like open_clip's trainer: ``run_training`` sets the run up (plan, inputs,
model, optimiser, MLflow run) and then, for every epoch, calls ``train_one_epoch``, scores the
test split, keeps the best epoch by T2V R@1, writes ``last.pt`` and logs the epoch. Model math
is in ``variants``; the optimiser in ``harness.optim``; numerics in ``harness.numerics``; DDP in
``harness.distributed``; the MLflow names in ``harness.train.schema``.
"""
from __future__ import annotations

import dataclasses
import difflib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness import distributed as dist_utils
from harness.console import Reporter, log
from harness.errors import ConfigError, EABenchError
from harness.optim import group_lrs
from harness.tracking import NullTracker, RunTracker, configure, status_for_exception
from harness.train import checkpoints as ckpt
from harness.train import schema
from harness.train.config import Numerics, TrainConfig
from harness.train.evaluation import Scores, frame_weight_arrays, score, write_frame_weights, write_ranks
from harness.train.inputs import Batches, Prepared, TrainInputs, epoch_pairs, prepare, step_chunks
from harness.train.model import RetrievalModel, build_model, build_optimizer_for
from harness.train.plan import RunPlan, load_resume, resolve_plan
from harness.train.resources import Resources
from harness.train.result import TrainingDiverged, TrainResult, seed_all
from harness.synthetic import load_truth, relevant_frames
from variants import list_variants

__all__ = ["run_training", "train_one_epoch", "train_step"]

OnEpoch = Callable[[int, dict[str, float]], None]
FIGURE_VIDEOS = 4  # test videos in each run's frame-weight figure


@dataclass
class _Progress:
    """What a run has done so far: saved in ``last.pt`` so a killed run resumes exactly."""

    start_epoch: int = 0
    best: dict[str, float] = field(default_factory=lambda: {"epoch": -1, "t2v/R1": -1.0})
    history: list[dict[str, float]] = field(default_factory=list)
    best_weights: dict[str, Any] | None = None  # frame weights of the best epoch (for its figure)
    skipped: int = 0          # non-finite steps skipped in the whole run
    in_a_row: int = 0         # of which at the end, consecutively (carried across epochs)
    steps: int = 0            # steps attempted in the whole run


def run_training(cfg: TrainConfig, *, on_epoch: OnEpoch | None = None, parent_run_id: str | None = None,
                 run_name: str | None = None, tags: dict[str, Any] | None = None,
                 tracking_uri: str | None = None, resources: Resources | None = None) -> TrainResult:
    """Train ``cfg.variant`` and evaluate after every epoch; one MLflow run; returns the best epoch.

    ``on_epoch(epoch, metrics)`` gets the flat per-epoch metrics (``train/loss``, ``train/lr``,
    ``t2v/R1`` ...) after the epoch's checkpoint is written. If it raises ``StopRun`` or
    ``optuna.TrialPruned`` the run is ended KILLED; any other exception ends it FAILED; either
    way the exception propagates. ``cfg.resume = RUN_ID`` continues a killed run from its last
    checkpoint (the saved config wins over ``cfg`` except device/tracking/progress settings).
    ``resources`` keeps CLIP, frame caches and features between the calls of one owner.
    """
    t_start = time.perf_counter()
    cfg, state = load_resume(cfg) if cfg.resume else (cfg, None)
    plan, info = _distributed_plan(resolve_plan(cfg))
    seed_all(plan.seed)
    if not plan.rows and info.is_main:
        _note_not_a_paper_row(cfg.variant)
    p = plan.preset
    reporter = Reporter(enabled=info.is_main and cfg.progress)
    with reporter:
        run = prepare(plan, reporter, resources or Resources())
        seed_all(plan.seed)  # model init does not depend on what the data preparation consumed
        model = build_model(plan.spec, run.backbone, protocol=plan.protocol, numerics=plan.numerics,
                            num_frames=p.max_frames, device=plan.device, compile=cfg.compile,
                            grad_checkpointing=cfg.grad_checkpointing, emulate_gpus=p.emulate_gpus)
        steps = _steps_per_epoch(plan, run.inputs)
        optimizer, scheduler = build_optimizer_for(
            model, kind=plan.optimizer, protocol=plan.protocol, lr=p.lr, coef_lr=p.coef_lr,
            weight_decay=p.weight_decay, warmup=p.warmup_proportion, max_grad_norm=p.max_grad_norm,
            t_total=steps * p.epochs,
            fused=plan.device.type == "cuda" and plan.numerics is Numerics.FAST)
        train_model = _ddp(model, plan) if info.enabled else model
        done = _restore(state, model, optimizer, scheduler)
        tracker = _tracker(plan, info, run_name, tags, parent_run_id, tracking_uri, done.start_epoch)
        run_id = dist_utils.broadcast_object(tracker.run_id)
        cdir = ckpt.checkpoint_dir(cfg.tracking_root, run_id)
        if state is not None:
            ckpt.set_rng_state(state["rng"])
        try:
            if not cfg.resume:
                _log_setup(tracker, plan, run, steps, info.world_size)
            batches = Batches(plan, run.inputs, run.feats)
            epoch_task = reporter.add("epochs", p.epochs)
            reporter.advance(epoch_task, done.start_epoch)
            step_task = reporter.add("steps", steps)
            try:
                for epoch in range(done.start_epoch, p.epochs):
                    reporter.reset(step_task, f"epoch {epoch + 1}/{p.epochs}", steps)
                    loss = train_one_epoch(train_model, model, optimizer, scheduler, plan, run.inputs,
                                           batches, epoch, steps, reporter, step_task, cdir, done)
                    row = _epoch_row(epoch, loss, done.skipped, group_lrs(optimizer))
                    scores = score(model, plan, run.inputs, run.feats, reporter) if info.is_main else None
                    metrics = dist_utils.broadcast_object(scores.metrics if scores is not None else None)
                    row.update(schema.flat_metrics(metrics))
                    done.history.append(row)
                    tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                    if metrics["t2v"]["R1"] >= done.best["t2v/R1"]:  # a tie goes to the later epoch
                        done.best = {"epoch": epoch, **schema.flat_metrics(metrics)}
                        if info.is_main:
                            _save_best(tracker, cfg, model, epoch, scores, run_id, run.inputs, cdir)
                            done.best_weights = scores.weights
                    if info.is_main:
                        _save_last(cfg, model, optimizer, scheduler, epoch, done, run_id, cdir)
                    dist_utils.barrier()
                    reporter.advance(epoch_task, 1)
                    log(f"epoch {epoch + 1}/{p.epochs}: loss {loss:.4f}  t2v R@1 {row['t2v/R1']:.1f}  "
                        f"v2t R@1 {row['v2t/R1']:.1f}" + (f"  ({done.skipped} steps skipped)" if done.skipped else ""))
                    if on_epoch is not None:
                        on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            finally:
                batches.close()
            _log_finish(tracker, cfg, done, cdir, info.is_main)
            if info.is_main:
                _log_figures(tracker, plan, run.inputs, done)
            tracker.end("FINISHED")
        except BaseException as exc:
            tracker.end(status_for_exception(exc))
            if info.is_main and _pruned(exc):  # a pruned trial is never resumed: free its last.pt
                (cdir / ckpt.LAST).unlink(missing_ok=True)
            raise
    if info.is_main and not cfg.keep_last:
        (cdir / ckpt.LAST).unlink(missing_ok=True)
    best = done.best
    return TrainResult(
        run_id=run_id, variant=plan.spec.name, dataset=cfg.dataset, protocol=str(plan.protocol),
        best_epoch=int(best["epoch"]), t2v=schema.nested_metrics(best, "t2v"),
        v2t=schema.nested_metrics(best, "v2t"), history=done.history, numerics=str(plan.numerics),
        skipped_steps=done.skipped, failed_videos=run.inputs.failed,
        seconds=time.perf_counter() - t_start)


def train_one_epoch(train_model: nn.Module, model: RetrievalModel, optimizer: torch.optim.Optimizer,
                    scheduler: Any, plan: RunPlan, inputs: TrainInputs, batches: Batches, epoch: int,
                    steps: int, reporter: Reporter, task: int, cdir: Path, done: _Progress) -> float:
    """One epoch; returns the mean finite loss. Skipped steps are counted in ``done`` for the whole
    run: the run stops as diverged after ``max_nonfinite_steps`` skipped steps in a row (across
    epochs) or when more than half of its steps so far were skipped."""
    p = plan.preset
    chunks = step_chunks(epoch_pairs(inputs, p.expand_sentences, p.seed, epoch), p.batch_size, steps)
    world = dist_utils.dist_info().world_size
    limit = plan.cfg.max_nonfinite_steps
    train_model.train()
    total, n_ok = 0.0, 0
    for step, batch in enumerate(batches.iterate(chunks)):
        loss, applied = train_step(train_model, model, optimizer, scheduler, batch, p.max_grad_norm)
        done.steps += 1
        if applied:
            done.in_a_row = 0
            total += loss
            n_ok += 1
        else:
            done.skipped += 1
            done.in_a_row += 1
            log(f"epoch {epoch} step {step}: non-finite loss or gradient ({loss}); step skipped "
                f"({done.skipped} of {done.steps} steps so far)")
            if done.in_a_row >= limit or (done.steps >= limit and 2 * done.skipped > done.steps):
                last = (f"{cdir / ckpt.LAST} (end of epoch {epoch - 1})" if epoch > 0
                        else "none (no epoch finished)")
                raise TrainingDiverged(
                    f"stopped at epoch {epoch} step {step}: {done.skipped} of {done.steps} steps "
                    f"({done.in_a_row} in a row) had a non-finite loss or gradient; the last good "
                    f"checkpoint is {last}; lower the learning rate (--set lr=...), or try "
                    f"--numerics fast")
        reporter.advance(task, 1, items=len(batch[0]) * world, info=f"loss {loss:.4f}")
    return total / n_ok if n_ok else float("nan")


def train_step(train_model: nn.Module, model: RetrievalModel, optimizer: torch.optim.Optimizer,
               scheduler: Any, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               max_grad_norm: float) -> tuple[float, bool]:
    """One optimisation step; returns (loss, applied).

    A non-finite loss or gradient norm (on any rank) skips the update entirely: gradients are
    dropped, the optimiser and schedule do not advance. After an applied step the logit scale is
    clamped to <= ln(100) (PAPER.md §1.2).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = train_model(*batch)
    bad = dist_utils.all_reduce_flag(not bool(torch.isfinite(loss)))
    if not bad:
        loss.backward()
        params = [q for q in model.parameters() if q.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        bad = dist_utils.all_reduce_flag(not bool(torch.isfinite(norm)))
    if bad:
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), False
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    model.head.clamp_logit_scale()
    return float(loss.detach()), True


# -------------------------------------------------------------------------------------- setup


def _pruned(exc: BaseException) -> bool:
    """Optuna's TrialPruned (by name: the engine does not import Optuna). A ``StopRun`` or a kill
    keeps ``last.pt``, so the run can be resumed."""
    return any(c.__name__ == "TrialPruned" for c in type(exc).__mro__)


def _distributed_plan(plan: RunPlan) -> tuple[RunPlan, dist_utils.DistInfo]:
    """Join the torchrun process group (if any): each rank on its own GPU, the batch split evenly."""
    info = dist_utils.init_from_env(str(plan.device))
    if info.enabled and plan.device.type == "cuda":
        plan = dataclasses.replace(plan, device=torch.device("cuda", info.local_rank))
    if plan.preset.batch_size % info.world_size:
        raise ConfigError(f"batch size {plan.preset.batch_size} is not divisible by the "
                          f"{info.world_size} processes; the global batch is split evenly")
    # Loose types reproduce G GPUs exactly on any number of processes (only gradient scales
    # change); the tight type's per-group losses need whole groups on every process.
    if not plan.spec.loose and plan.preset.emulate_gpus % info.world_size:
        raise ConfigError(f"emulate_gpus={plan.preset.emulate_gpus} is not a multiple of the "
                          f"{info.world_size} processes of this run: for {plan.spec.name} each process "
                          f"must hold whole emulated GPUs (B/G x B/G loss groups); use --set "
                          f"emulate_gpus=N with N a multiple of {info.world_size}, or run on a number "
                          f"of GPUs that divides {plan.preset.emulate_gpus}")
    return plan, info


def _note_not_a_paper_row(variant: str) -> None:
    # Allowed on purpose (searches try other ratios), but a typo must not pass unnoticed.
    close = difflib.get_close_matches(variant, list_variants("*"), n=3, cutoff=0.5)
    log(f"note: {variant} is a valid design but not a row of the paper's tables"
        + (f" (closest rows: {', '.join(close)})" if close else ""))


def _steps_per_epoch(plan: RunPlan, inputs: TrainInputs) -> int:
    p = plan.preset
    n_pairs = len(epoch_pairs(inputs, p.expand_sentences, p.seed, 0))
    steps = n_pairs // p.batch_size
    if steps == 0:
        raise ConfigError(f"batch size {p.batch_size} exceeds the {n_pairs} training pairs of "
                          f"{plan.cfg.dataset}; lower --batch-size")
    return steps


def _ddp(model: RetrievalModel, plan: RunPlan) -> nn.Module:
    return DistributedDataParallel(model, device_ids=[plan.device.index] if plan.device.type == "cuda"
                                   else None, find_unused_parameters=True)


def _restore(state: dict[str, Any] | None, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any) -> _Progress:
    if state is None:
        return _Progress()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return _Progress(state["epoch"] + 1, state["best"], state["history"], None, state["skipped"],
                     state.get("in_a_row", 0), state.get("steps", 0))


def _tracker(plan: RunPlan, info: dist_utils.DistInfo, run_name: str | None, tags: dict[str, Any] | None,
             parent_run_id: str | None, tracking_uri: str | None, start_epoch: int) -> Any:
    """The run's MLflow writer on rank 0 (a no-op elsewhere): a new run, or the resumed one."""
    cfg = plan.cfg
    if not info.is_main:
        return NullTracker()
    target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri, cfg.experiment)
    if cfg.resume:
        tracker = RunTracker.resume(target, cfg.resume)
        # the caller's tags name the new owner (a study's retried trial), the rest stay as they were
        tracker.set_tags({**(tags or {}), "resumed_from_epoch": str(start_epoch)})
        return tracker
    return RunTracker.start(target, run_name=run_name or f"{plan.spec.name}/{cfg.dataset}/{plan.protocol}",
                            tags=schema.run_tags(plan, tags), parent_run_id=parent_run_id)


# -------------------------------------------------------------------------------------- logging


def _log_setup(tracker: Any, plan: RunPlan, run: Prepared, steps: int, world_size: int) -> None:
    tracker.log_params(schema.run_params(plan, run.backbone, run.inputs, steps, world_size))
    tracker.log_json({"config": plan.cfg.to_dict(), "preset": plan.preset.to_dict(),
                      "variant": plan.spec.to_dict(), "numerics": str(plan.numerics),
                      "optimizer": str(plan.optimizer), "failed_videos": run.inputs.failed},
                     schema.ARTIFACT_CONFIG)


def _epoch_row(epoch: int, loss: float, skipped: int, lrs: dict[str, float]) -> dict[str, float]:
    row = {"epoch": epoch, schema.METRIC_LOSS: loss,
           schema.METRIC_LR: lrs.get("new_decay", next(iter(lrs.values()))),
           schema.METRIC_SKIPPED: float(skipped)}
    if "clip_decay" in lrs:
        row[schema.METRIC_LR_CLIP] = lrs["clip_decay"]
    return row


def _save_best(tracker: Any, cfg: TrainConfig, model: nn.Module, epoch: int, scores: Scores, run_id: str,
               inputs: TrainInputs, cdir: Path) -> None:
    """``best.pt`` and the best epoch's artifacts (frame weights, per-query ranks)."""
    ckpt.save_atomic({"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
                      "metrics": scores.metrics, "run_id": run_id}, cdir / ckpt.BEST)
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact(write_frame_weights(Path(tmp) / schema.ARTIFACT_FRAME_WEIGHTS, inputs,
                                                 scores.weights))
        tracker.log_artifact(write_ranks(Path(tmp) / schema.ARTIFACT_RANKS, inputs, scores.ranks))


def _save_last(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               epoch: int, done: _Progress, run_id: str, cdir: Path) -> None:
    ckpt.save_atomic({
        "config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": ckpt.rng_state(), "best": done.best, "history": done.history,
        "skipped": done.skipped, "in_a_row": done.in_a_row, "steps": done.steps, "run_id": run_id},
        cdir / ckpt.LAST)


def _log_finish(tracker: Any, cfg: TrainConfig, done: _Progress, cdir: Path, is_main: bool) -> None:
    best = {k: v for k, v in done.best.items() if k != "epoch"}
    tracker.log_metrics({f"best/{k}": v for k, v in best.items()}
                        | {schema.METRIC_BEST_EPOCH: float(done.best["epoch"])}, step=int(done.best["epoch"]))
    tracker.log_json(done.history, schema.ARTIFACT_HISTORY)
    if cfg.save_checkpoint and is_main:
        tracker.log_artifact(cdir / ckpt.BEST, schema.ARTIFACT_CHECKPOINT_DIR)


def _log_figures(tracker: Any, plan: RunPlan, inputs: TrainInputs, done: _Progress) -> None:
    """The run page's figures: the best epoch's frame weights (first test videos) and the curves.

    Never fatal: a figure that cannot be drawn is reported and the finished run stays FINISHED.
    """
    # Imported here: harness.figures reads the metric names of harness.train.schema, so importing
    # it at the top would make `import harness.figures` re-enter this half-initialised package.
    from harness.figures import frame_weight_figure, training_curves_figure

    try:
        tracker.log_figure(training_curves_figure(done.history), schema.ARTIFACT_FIGURE_CURVES)
        if done.best_weights is not None:
            arrays = frame_weight_arrays(inputs, done.best_weights)
            n = min(FIGURE_VIDEOS, len(inputs.test_ids))
            frames = np.stack([inputs.cache.get(v)[0] for v in inputs.test_ids[:n]])
            tracker.log_figure(frame_weight_figure(arrays, list(arrays["texts"]), frames=frames,
                                                   highlight=_synthetic_relevant(plan, inputs, n),
                                                   max_videos=n), schema.ARTIFACT_FIGURE_WEIGHTS)
    except Exception as exc:  # noqa: BLE001 - a figure is a courtesy; the run's numbers are logged
        log(f"run figures not logged: {type(exc).__name__}: {exc}")


def _synthetic_relevant(plan: RunPlan, inputs: TrainInputs, n: int) -> np.ndarray | None:
    """The synthetic benchmark's true relevant frames of the first ``n`` test videos (else None)."""
    if plan.cfg.dataset != "synthetic":
        return None
    try:
        truth = load_truth(Path(plan.cfg.root))["videos"]
        return np.array([relevant_frames(truth[v]["relevant_seconds"], plan.preset.max_frames)
                         for v in inputs.test_ids[:n]], dtype=bool)
    except (KeyError, ValueError, OSError, EABenchError):
        return None
