"""Scoring a model on the test split, and ``evaluate``: re-scoring a trained run's best epoch.

Each video and each text is encoded once; the similarity matrix is computed in chunks (the tight
type scores every pair through the cross encoder); metrics come from ``harness.metrics``. The
per-video excitation gates and aggregation weights are returned with the metrics, for the
``frame_weights.npz`` artifact.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.console import Reporter, log
from harness.data.feature_cache import FeatureTable
from harness.data.moments import frames_in_moments
from harness.errors import CheckpointError, ConfigError
from harness.metrics import metrics_from_ranks, t2v_v2t_ranks
from harness.numerics import autocast
from harness.text import tokenize
from harness.tracking import RunTracker, configure
from harness.train import checkpoints as ckpt
from harness.train.config import TrainConfig
from harness.train.inputs import TrainInputs, prepare
from harness.train.model import RetrievalModel, build_model
from harness.train.plan import RunPlan, resolve_plan
from harness.train.resources import Resources
from harness.train.schema import ARTIFACT_RANKS
from harness.train.result import TrainResult, seed_all

__all__ = ["Scores", "evaluate", "frame_weight_arrays", "query_ids", "score", "write_frame_weights",
           "write_ranks"]

Metrics = dict[str, dict[str, float]]


@torch.no_grad()
def _encode_test(model: RetrievalModel, plan: RunPlan, inputs: TrainInputs, feats: FeatureTable | None,
                 reporter: Reporter | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """(text [M,D], videos [N,D] or frames [N,T,D] for the tight type, mask [N,T], aux per chunk)."""
    head = model.head
    bs = plan.eval_batch_size
    ids, texts = inputs.test_ids, inputs.test_texts
    task = reporter.add("evaluate", len(ids)) if reporter is not None else None
    video_l, mask_l, aux_l = [], [], []
    for i in range(0, len(ids), bs):
        chunk = ids[i:i + bs]
        if feats is not None:
            vi = torch.tensor([feats.index[v] for v in chunk], device=feats.frames.device)
            frames, mask = feats.frames[vi], feats.mask[vi]
        else:
            pixels, mask = inputs.cache.batch(chunk, plan.device)
            frames = model.clip.encode_frames(pixels)
        frames = frames.float()
        if head.loose:
            v, aux = head.encode_video(frames, mask)
            video_l.append(v.float())
        else:
            aux = head.frame_weights(frames, mask)
            video_l.append(frames)
        mask_l.append(mask.float())
        aux_l.append({k: t.float().cpu() for k, t in aux.items()})
        if reporter is not None:
            reporter.advance(task, len(chunk), items=len(chunk))
    text_l = []
    tb = max(bs, 256)
    for i in range(0, len(texts), tb):
        chunk_t = texts[i:i + tb]
        if feats is not None:
            ti = torch.tensor([feats.text_index[t] for t in chunk_t], device=feats.text.device)
            text_l.append(feats.text[ti].float())
        else:
            tokens = tokenize(chunk_t, plan.preset.max_words).to(plan.device)
            text_l.append(model.clip.encode_text(tokens).float())
    if reporter is not None:
        reporter.hide(task)
    return torch.cat(text_l), torch.cat(video_l), torch.cat(mask_l), aux_l


@dataclass
class Scores:
    """One evaluation of the test split: metrics, per-query ranks and per-video frame weights."""

    metrics: Metrics                    # {"t2v": {"R1": ..}, "v2t": {..}}
    ranks: dict[str, np.ndarray]        # {"t2v": int64 [queries], "v2t": int64 [videos]}, 1-based
    weights: dict[str, np.ndarray]      # "mask" [N,T], and "gates"/"weights" [N,T] where the variant has them


@torch.no_grad()
def score(model: RetrievalModel, plan: RunPlan, inputs: TrainInputs, feats: FeatureTable | None,
          reporter: Reporter | None = None) -> Scores:
    """Metrics and ranks on the test split (the same ranks the metrics are computed from) and
    the per-video frame weights (gates / weights / mask)."""
    model.eval()
    head = model.head
    with autocast(plan.numerics, plan.device):
        text, video, mask_all, aux_l = _encode_test(model, plan, inputs, feats, reporter)
        if head.loose:
            sim = torch.cat([head.loose_logits(text[i:i + 4096], video).float().cpu()
                             for i in range(0, len(text), 4096)])
        else:
            sim = head.similarity(text, video, mask_all).float().cpu()
    one_each = len(inputs.test_texts) == len(inputs.test_ids) and inputs.test_t2v == list(range(len(inputs.test_ids)))
    ranks = t2v_v2t_ranks(sim, None if one_each else inputs.test_t2v)
    metrics = {d: metrics_from_ranks(ranks[d]) for d in ("t2v", "v2t")}
    weights: dict[str, np.ndarray] = {"mask": mask_all.cpu().numpy().astype(np.float32)}
    for key in ("gates", "weights"):
        if aux_l and key in aux_l[0]:
            weights[key] = torch.cat([a[key] for a in aux_l]).numpy().astype(np.float32)
    return Scores(metrics, ranks, weights)


def frame_weight_arrays(inputs: TrainInputs, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Everything ``frame_weights.npz`` holds (schema in docs/ARCHITECTURE.md).

    ``moments`` (bool [N, T]) is added when the test split annotates moments (DiDeMo,
    ActivityNet): the sampled frames that lie inside any of a video's annotated moments.
    """
    first_text: dict[int, str] = {}
    for t, v in zip(inputs.test_texts, inputs.test_t2v):
        first_text.setdefault(v, t)
    times = np.stack([inputs.cache.times(v) for v in inputs.test_ids]).astype(np.float32)
    out = {"video_ids": np.array(inputs.test_ids, dtype=str),
           "texts": np.array([first_text[i] for i in range(len(inputs.test_ids))], dtype=str),
           "frame_times": times, **weights}
    if any(inputs.test_moments):
        out["moments"] = np.stack([frames_in_moments(t, m) for t, m in zip(times, inputs.test_moments)])
    return out


def write_frame_weights(path: Path, inputs: TrainInputs, weights: dict[str, np.ndarray]) -> Path:
    """The ``frame_weights.npz`` artifact: :func:`frame_weight_arrays` as one npz file."""
    np.savez(path, **frame_weight_arrays(inputs, weights))
    return path


def query_ids(inputs: TrainInputs) -> list[str]:
    """A stable id per test query: ``<video id>#<caption index>`` (caption order of the reader)."""
    seen: dict[int, int] = {}
    out = []
    for v in inputs.test_t2v:
        k = seen.get(v, 0)
        seen[v] = k + 1
        out.append(f"{inputs.test_ids[v]}#{k}")
    return out


def write_ranks(path: Path, inputs: TrainInputs, ranks: dict[str, np.ndarray]) -> Path:
    """The ``ranks.npz`` artifact: 1-based ranks per T2V query and per V2T video, with their ids.

    The run's metrics are exactly ``harness.metrics.metrics_from_ranks`` of these arrays.
    """
    np.savez(path, t2v=np.asarray(ranks["t2v"], dtype=np.int64), v2t=np.asarray(ranks["v2t"], dtype=np.int64),
             query_ids=np.array(query_ids(inputs), dtype=str), video_ids=np.array(inputs.test_ids, dtype=str),
             query_video=np.asarray(inputs.test_t2v, dtype=np.int64))
    return path


def evaluate(run_id: str | None = None, checkpoint: Path | str | None = None, *,
             tracking_root: str = "runs", device: str = "auto", progress: bool = True,
             root: str | None = None, resources: Resources | None = None,
             tracking_uri: str | None = None, log_ranks: bool = True) -> TrainResult:
    """Re-evaluate the best epoch of a run (its ``best.pt``) on its test split.

    ``root`` overrides the data root saved in the checkpoint (data moved since training). With
    ``log_ranks`` the per-query ranks are logged to the run as ``eval/ranks.npz`` (when the run is
    in the tracking store) and returned in ``TrainResult.ranks``.
    """
    if (run_id is None) == (checkpoint is None):
        raise ConfigError("give exactly one of --run RUN_ID or --checkpoint PATH")
    path = Path(checkpoint) if checkpoint else ckpt.checkpoint_dir(tracking_root, run_id or "") / ckpt.BEST
    state = ckpt.load(path)
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an eabench training checkpoint (no config/model)")
    cfg = TrainConfig.from_dict(state["config"])
    cfg = dataclasses.replace(cfg, device=device, progress=progress, resume=None, root=root or cfg.root)
    plan = resolve_plan(cfg)
    seed_all(plan.seed)
    reporter = Reporter(enabled=progress)
    with reporter:
        run = prepare(plan, reporter, resources or Resources())
        model = build_model(plan.spec, run.backbone, protocol=plan.protocol, numerics=plan.numerics,
                            num_frames=plan.preset.max_frames, device=plan.device,
                            compile=cfg.compile, grad_checkpointing=cfg.grad_checkpointing,
                            emulate_gpus=plan.preset.emulate_gpus)
        model.load_state_dict(state["model"])
        scores = score(model, plan, run.inputs, run.feats, reporter)
    rid = state.get("run_id", run_id or "")
    if log_ranks and rid:
        _log_eval_ranks(rid, cfg, tracking_uri, run.inputs, scores)
    return TrainResult(run_id=rid, variant=plan.spec.name, dataset=cfg.dataset, protocol=str(plan.protocol),
                       best_epoch=int(state["epoch"]), t2v=scores.metrics["t2v"], v2t=scores.metrics["v2t"],
                       numerics=str(plan.numerics), failed_videos=run.inputs.failed, ranks=scores.ranks)


def _log_eval_ranks(run_id: str, cfg: TrainConfig, tracking_uri: str | None, inputs: TrainInputs,
                    scores: Scores) -> None:
    try:
        target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri, cfg.experiment)
        tracker = RunTracker(target, run_id)
        tracker.client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - a checkpoint copied away from its store: nothing to log to
        log(f"ranks not logged: run {run_id} is not in the tracking store ({type(exc).__name__})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact(write_ranks(Path(tmp) / ARTIFACT_RANKS, inputs, scores.ranks), "eval")
