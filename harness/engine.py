"""Training and evaluation of one variant in the ``paper`` or ``frozen`` protocol (PAPER.md §1.4, §4).

``run_training(TrainConfig(...))`` is the whole pipeline: resolve the preset, read the splits,
build/open the frame cache, load CLIP, build the variant head, train with evaluation after every
epoch, keep the best epoch by T2V R@1, and log it all as one MLflow run (docs/ARCHITECTURE.md).
Studies call it in-process many times: CLIP, frame caches and frozen features are kept in memory.

The loop (one screen, nanoGPT style) is in ``_train``; model math lives in ``variants``; the
optimiser in ``harness.optim``; numerics in ``harness.numerics``; DDP pieces in
``harness.distributed``; checkpoints in ``harness.checkpoint``; MLflow in ``harness.tracking``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import checkpoint as ckpt
from harness import distributed as dist_utils
from harness.console import Reporter, log
from harness.errors import CheckpointError, ConfigError, DataError, EABenchError

__all__ = [
    "METRIC_KEYS",
    "RetrievalModel",
    "StopRun",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "evaluate",
    "resolve_config",
    "run_training",
    "train_step",
]

PROTOCOLS = ("paper", "frozen")
METRIC_KEYS = ("R1", "R5", "R10", "R50", "MdR", "MnR")
CROSS_MAX_POSITIONS = 128  # cross-base/cross_config.json (PAPER.md §1.3)


class StopRun(Exception):
    """Raise from ``on_epoch`` to stop a run on purpose (pruning); the run is recorded KILLED."""


class TrainingDiverged(EABenchError):
    """Too many non-finite losses in a row."""


# ----------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on. ``None`` fields take the dataset preset's value.

    ``overrides`` are ``--set key=value`` pairs applied to the preset (any DatasetPreset field).
    ``limit_train``/``limit_test`` keep the first N videos of a split (quick runs, tests).
    """

    variant: str
    dataset: str = "synthetic"
    root: str = "."
    protocol: str = "paper"
    backbone: str | None = None
    weights: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str = "auto"
    numerics: str = "auto"              # auto (= fast) | fast | reference
    optimizer: str = "auto"             # auto (reference: bertadam, fast: adamw) | adamw | bertadam
    overrides: tuple[tuple[str, str], ...] = ()
    videos: str | None = None           # folder holding the video files (default: under root)
    cache_dir: str | None = None        # frame/feature cache root (default: <root>/.eabench-cache)
    tracking_root: str = "runs"
    tracking_uri: str | None = None
    experiment: str = "eabench"
    save_checkpoint: bool = False       # log checkpoint/best.pt as an MLflow artifact
    keep_last: bool = False             # keep last.pt after a finished run
    resume: str | None = None           # MLflow run id to continue
    compile: bool = False
    grad_checkpointing: bool = False
    max_nonfinite_steps: int = 20
    eval_batch_size: int = 64
    workers: int = 1                    # frame decoding processes when the cache is built
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = [list(kv) for kv in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["overrides"] = tuple(tuple(kv) for kv in d.get("overrides", ()))
        return cls(**d)


@dataclass
class TrainResult:
    run_id: str
    variant: str
    dataset: str
    protocol: str
    best_epoch: int
    t2v: dict[str, float]
    v2t: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    numerics: str = "fast"
    skipped_steps: int = 0
    failed_videos: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Plan:
    """A TrainConfig with the preset resolved and everything validated (no compute yet)."""

    cfg: TrainConfig
    preset: Any
    spec: Any
    rows: tuple[Any, ...]
    device: torch.device
    numerics: str
    optimizer: str
    backbone: str
    weights: Path | None
    cache_root: Path


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    return dev


def _variant(name: str) -> tuple[Any, tuple[Any, ...]]:
    from variants import get_variant, list_variants, parse_variant_name

    try:
        entry = get_variant(name)
        return entry.spec, tuple(entry.rows)
    except KeyError as exc:
        try:  # a valid spec that is not a paper row (e.g. another ratio) is still trainable
            return parse_variant_name(name), ()
        except (ValueError, KeyError):
            close = difflib.get_close_matches(name, list_variants("*"), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close and "did you mean" not in str(
                exc) else ""
            raise ConfigError(f"--variant {name!r}: {str(exc).strip(chr(39))}{hint} "
                              "(`eabench variants` lists every name)") from None


def resolve_config(cfg: TrainConfig) -> _Plan:
    """Validate ``cfg`` before any compute; errors name the flag and the fix."""
    from dataclasses import replace

    from harness.backbone import TINY_CLIP, resolve_model_name
    from harness.presets import get_preset, override

    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {cfg.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    preset = override(get_preset(cfg.dataset), dict(cfg.overrides))
    changes: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "seed", "backbone", "weights"):
        value = getattr(cfg, key)
        if value is not None:
            changes[key] = str(value) if key == "weights" else value
    preset = replace(preset, **changes)
    if preset.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {preset.epochs}")
    if preset.batch_size < 2:
        raise ConfigError(f"batch size must be >= 2 (contrastive loss), got {preset.batch_size}")
    spec, rows = _variant(cfg.variant)
    try:  # ratios too large for T fail here, before any decoding or CLIP loading
        from variants import build_head

        with torch.device("meta"):
            build_head(spec, num_frames=preset.max_frames, embed_dim=64)
    except ValueError as exc:
        raise ConfigError(f"--variant {cfg.variant} with max_frames={preset.max_frames}: {exc}") from None
    if spec.temporal == "tightTransf" and preset.max_words + preset.max_frames > CROSS_MAX_POSITIONS:
        raise ConfigError(
            f"tightTransf needs max_words + max_frames <= {CROSS_MAX_POSITIONS} (CLIP4Clip's cross "
            f"config assert), got {preset.max_words} + {preset.max_frames}; lower max_words with "
            f"--set max_words=N")
    device = _device(cfg.device)
    from harness.numerics import default_optimizer, resolve_numerics

    try:
        numerics = resolve_numerics(cfg.numerics, device)
    except ValueError as exc:
        raise ConfigError(f"--numerics: {exc}") from None
    optimizer = default_optimizer(numerics) if cfg.optimizer == "auto" else cfg.optimizer
    if optimizer not in ("adamw", "bertadam"):
        raise ConfigError(f"optimizer {cfg.optimizer!r}: choose auto, adamw or bertadam")
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"--root {root}: not a folder; pass the dataset folder holding the "
                        f"annotation files of {cfg.dataset}")
    backbone = resolve_model_name(preset.backbone)
    weights = Path(preset.weights).expanduser() if preset.weights else None
    if weights is None and cfg.dataset == "synthetic":
        candidate = root / "clip" / f"{backbone}.safetensors"
        weights = candidate if candidate.is_file() else None
    if weights is None and backbone != TINY_CLIP:
        raise CheckpointError(
            f"no CLIP weights for {backbone}: pass --weights PATH to OpenAI's ViT-B-32.pt (the file "
            f"CLIP4Clip downloads to modules/ViT-B-32.pt from openaipublic.azureedge.net); this "
            f"machine has no network, so copy it here first")
    if weights is not None and not weights.is_file():
        raise CheckpointError(f"--weights {weights}: file not found; give the path of the CLIP "
                              f"checkpoint (for ViT-B/32: OpenAI's ViT-B-32.pt)")
    if cfg.cache_dir:
        cache_root = Path(cfg.cache_dir)
    else:
        from harness.data.frame_cache import default_cache_root

        cache_root = default_cache_root(root)
    if cfg.max_nonfinite_steps < 1:
        raise ConfigError("max_nonfinite_steps must be >= 1")
    return _Plan(cfg, preset, spec, rows, device, numerics, optimizer, backbone, weights, cache_root)


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class _Data:
    train: list[Any]                       # VideoRecord with a cached video
    test_ids: list[str]
    test_texts: list[str]                  # every caption of every test video
    test_t2v: list[int]                    # video index of each test caption
    cache: Any                             # FrameCache
    failed_train: dict[str, str]
    failed_test: dict[str, str]


_CACHES: dict[tuple[str, str, Any], Any] = {}


def _read_records(plan: _Plan) -> tuple[list[Any], list[Any]]:
    """The train and test records (annotation files only; fails early on missing files)."""
    from harness.data.readers import read_dataset

    p, cfg = plan.preset, plan.cfg
    train = read_dataset(cfg.dataset, cfg.root, p.train_split, cfg.videos)
    test = read_dataset(cfg.dataset, cfg.root, p.test_split, cfg.videos)
    if cfg.limit_train:
        train = train[: cfg.limit_train]
    if cfg.limit_test:
        test = test[: cfg.limit_test]
    return train, test


def _prepare_data(plan: _Plan, records: tuple[list[Any], list[Any]], image_size: int,
                  reporter: Reporter) -> _Data:
    from harness.data.frame_cache import FrameCache
    from harness.data.frames import FrameSettings

    p, cfg = plan.preset, plan.cfg
    train, test = records
    settings = FrameSettings(max_frames=p.max_frames, fps=p.feature_framerate,
                             slice_framepos=p.slice_framepos, image_size=image_size)
    key = (str(plan.cache_root.resolve()), cfg.dataset, settings)
    cache = _CACHES.get(key)
    wanted = {r.video_id for r in train} | {r.video_id for r in test}
    if cache is None or not wanted <= (set(cache.video_ids) | set(cache.failed)):
        info = dist_utils.dist_info()
        if info.is_main:
            try:
                cache = FrameCache.open(plan.cache_root, settings, cfg.dataset)
            except DataError:
                cache = None
            if cache is None or not wanted <= (set(cache.video_ids) | set(cache.failed)):
                log(f"frame cache: decoding videos of {cfg.dataset} into {plan.cache_root}")
                FrameCache.build([*train, *test], settings, plan.cache_root, workers=cfg.workers,
                                 dataset=cfg.dataset, progress=reporter.live)
        dist_utils.barrier()
        cache = FrameCache.open(plan.cache_root, settings, cfg.dataset)
        _CACHES[key] = cache
    failed = cache.failed
    failed_train = {r.video_id: failed.get(r.video_id, "not in cache") for r in train
                    if r.video_id not in cache}
    failed_test = {r.video_id: failed.get(r.video_id, "not in cache") for r in test
                   if r.video_id not in cache}
    train = [r for r in train if r.video_id in cache and r.texts]
    test = [r for r in test if r.video_id in cache and r.texts]
    if failed_train or failed_test:
        log(f"skipping unreadable videos: {len(failed_train)} train, {len(failed_test)} test "
            f"(e.g. {next(iter({**failed_train, **failed_test}.items()))})")
    if not train:
        raise DataError(f"{cfg.dataset} {p.train_split}: no readable training video under {cfg.root}")
    if len(test) < 2:
        raise DataError(f"{cfg.dataset} {p.test_split}: fewer than 2 readable test videos under "
                        f"{cfg.root}; retrieval metrics need at least 2")
    test_ids = [r.video_id for r in test]
    texts, t2v = [], []
    for i, r in enumerate(test):
        for t in r.texts:
            texts.append(t)
            t2v.append(i)
    return _Data(train, test_ids, texts, t2v, cache, failed_train, failed_test)


def _epoch_pairs(data: _Data, expand: bool, seed: int, epoch: int) -> list[tuple[str, str]]:
    """This epoch's (video, text) samples in training order; a pure function of (seed, epoch)."""
    from harness.data.records import training_pairs

    pairs = training_pairs(data.train, expand, random.Random(seed * 1_000_003 + epoch))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(pairs), generator=g).tolist()
    return [pairs[i] for i in order]


# ----------------------------------------------------------------------------------------------
# model


_BACKBONES: dict[tuple[str, str], Any] = {}


def _load_backbone(plan: _Plan) -> Any:
    """CLIP from memory when this process loaded the same file before (studies call us often)."""
    from harness.backbone import load_clip

    if plan.weights is None:  # random tiny CLIP: seeded by the caller, never shared
        return load_clip(plan.backbone, None)
    st = plan.weights.stat()
    key = (plan.backbone, f"{plan.weights.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    if key not in _BACKBONES:
        _BACKBONES.clear()  # keep one: a ViT-B/32 is 600 MB
        _BACKBONES[key] = load_clip(plan.backbone, plan.weights)
    return _BACKBONES[key]


class RetrievalModel(nn.Module):
    """CLIP (paper protocol; None in the frozen protocol) + the variant head, returning the loss.

    ``forward`` computes the whole loss so that DDP sees every parameter use inside its forward.
    Loose types gather text features, ``video_local`` outputs and masks across ranks (the global
    batch); the tight type scores the local batch only, as CLIP4Clip does.
    """

    def __init__(self, head: nn.Module, clip: nn.Module | None = None, numerics: str = "fast") -> None:
        super().__init__()
        self.clip = clip
        self.head = head
        self.numerics = numerics

    def encode(self, video: torch.Tensor, mask: torch.Tensor, text: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B,T,3,S,S] + tokens [B,L] (or, frozen, features) -> frames [B,T,D], text [B,D]."""
        if self.clip is None:
            return video, text
        return self.clip.encode_frames(video), self.clip.encode_text(text)

    def forward(self, video: torch.Tensor, mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        from harness.numerics import autocast

        with autocast(self.numerics, video.device):
            frames, txt = self.encode(video, mask, text)
            head = self.head
            if head.loose:
                local = head.video_local(frames, mask)
                gathered = dist_utils.all_gather_with_grad(local)
                gmask = dist_utils.all_gather_with_grad(mask)
                gtext = dist_utils.all_gather_with_grad(txt)
                v, _ = head.video_global(gathered, gmask)
                logits = head.loose_logits(gtext, v)
            else:
                logits = head.similarity(txt, frames, mask)
        return symmetric_infonce(logits.float())


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """Indirection so tests can inject a non-finite loss (``monkeypatch.setattr``)."""
    from variants import symmetric_infonce as loss

    return loss(logits)


def _build_model(plan: _Plan, backbone: Any) -> RetrievalModel:
    from harness.numerics import convert_weights_fp16
    from variants import build_head

    text_init = backbone.text_init(4) if plan.spec.temporal in ("seqTransf", "tightTransf") else None
    head = build_head(plan.spec, num_frames=plan.preset.max_frames, embed_dim=backbone.embed_dim,
                      text_init=text_init, logit_scale_init=backbone.logit_scale_init)
    clip = None
    if plan.cfg.protocol == "paper":
        clip = copy.deepcopy(backbone)
        clip.train()
        if plan.numerics == "reference":
            convert_weights_fp16(clip.model)
        if plan.cfg.grad_checkpointing:
            clip.model.set_grad_checkpointing(True)
    if plan.cfg.compile:
        compile_parts(clip, head)
    return RetrievalModel(head, clip, plan.numerics).to(plan.device)


def compile_parts(clip: Any | None, head: nn.Module) -> None:
    """``torch.compile`` the CLIP encoders and the head's temporal transformer/LSTM/cross encoder.

    In place, so parameter names (and checkpoints) stay those of the eager model. The gathering,
    masking and pooling glue between them stays eager: it is cheap and its shapes vary.
    """
    if clip is not None:
        clip.encode_frames = torch.compile(clip.encode_frames)  # type: ignore[method-assign]
        clip.encode_text = torch.compile(clip.encode_text)  # type: ignore[method-assign]
    for name in ("seq", "cross"):
        part = getattr(head, name, None)
        if isinstance(part, nn.Module):
            part.compile()


def _is_clip_param(protocol: str) -> Callable[[str], bool]:
    # In CLIP4Clip logit_scale is clip.logit_scale and trains at CLIP's lr; we keep that in the
    # paper protocol. In the frozen protocol there is no CLIP group: everything is "new".
    def is_clip(name: str) -> bool:
        return protocol == "paper" and (name.startswith("clip.") or name == "head.logit_scale")
    return is_clip


# ----------------------------------------------------------------------------------------------
# batches


class _Batches:
    """Turns (video_id, text) pairs into model inputs; prefetches pixel batches in a thread."""

    def __init__(self, plan: _Plan, data: _Data, feats: Any | None) -> None:
        self.plan, self.data, self.feats = plan, data, feats
        self.device = plan.device
        self._pool = ThreadPoolExecutor(max_workers=1) if feats is None else None
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}

    def _load(self, pairs: list[tuple[str, str]], slot: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = [v for v, _ in pairs]
        texts = [t for _, t in pairs]
        if self.feats is not None:
            vi = torch.tensor([self.feats.index[v] for v in ids], device=self.feats.frames.device)
            ti = torch.tensor([self.feats.text_index[t] for t in texts], device=self.feats.text.device)
            return self.feats.frames[vi], self.feats.mask[vi], self.feats.text[ti]
        from harness.text import tokenize

        # Two reused (pinned on CUDA) uint8 buffers alternate: batch i+1 is read into one while
        # batch i, already copied, trains. The step's loss.item() syncs, so a buffer is never
        # overwritten while its host-to-device copy is in flight.
        buf = self._buffers.get((slot, len(ids)))
        s, t = self.data.cache.settings.image_size, self.data.cache.settings.max_frames
        if buf is None:
            buf = torch.empty((len(ids), t, 3, s, s), dtype=torch.uint8,
                              pin_memory=self.device.type == "cuda")
            self._buffers[(slot, len(ids))] = buf
        pix, mask = self.data.cache.batch_uint8(ids, out=buf)
        tokens = tokenize(texts, self.plan.preset.max_words)
        return pix, mask, tokens

    def _finish(self, item: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):  # type: ignore[no-untyped-def]
        if self.feats is not None:
            return item
        from harness.data.frames import normalize

        pix, mask, tokens = item
        pix = pix.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        return normalize(pix, mask), mask, tokens.to(self.device, non_blocking=True)

    def iterate(self, batches: list[list[tuple[str, str]]]):  # type: ignore[no-untyped-def]
        if self._pool is None:
            for b in batches:
                yield self._load(b)
            return
        nxt: Future | None = self._pool.submit(self._load, batches[0], 0) if batches else None
        for i in range(len(batches)):
            assert nxt is not None
            item = nxt.result()
            nxt = (self._pool.submit(self._load, batches[i + 1], (i + 1) % 2)
                   if i + 1 < len(batches) else None)
            yield self._finish(item)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def _score(model: RetrievalModel, plan: _Plan, data: _Data, feats: Any | None,
           reporter: Reporter | None = None) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Metrics on the test split and the per-video frame weights (gates / weights / mask)."""
    from harness.metrics import t2v_v2t
    from harness.numerics import autocast

    model.eval()
    head = model.head
    bs = max(plan.cfg.eval_batch_size, 1)
    ids, texts = data.test_ids, data.test_texts
    task = reporter.add("evaluate", len(ids)) if reporter is not None else None
    frames_l, mask_l, aux_l, video_l = [], [], [], []
    with autocast(plan.numerics, plan.device):
        for i in range(0, len(ids), bs):
            chunk = ids[i:i + bs]
            if feats is not None:
                vi = torch.tensor([feats.index[v] for v in chunk], device=feats.frames.device)
                frames, mask = feats.frames[vi], feats.mask[vi]
            else:
                pixels, mask = data.cache.batch(chunk, plan.device)
                frames = model.clip.encode_frames(pixels)
            frames = frames.float()
            if head.loose:
                v, aux = head.encode_video(frames, mask)
                video_l.append(v.float())
            else:
                aux = head.frame_weights(frames, mask)
                frames_l.append(frames)
            mask_l.append(mask.float())
            aux_l.append({k: t.float().cpu() for k, t in aux.items()})
            if reporter is not None:
                reporter.advance(task, len(chunk), items=len(chunk))
        text_l = []
        for i in range(0, len(texts), max(bs, 256)):
            chunk_t = texts[i:i + max(bs, 256)]
            if feats is not None:
                ti = torch.tensor([feats.text_index[t] for t in chunk_t], device=feats.text.device)
                text_l.append(feats.text[ti].float())
            else:
                from harness.text import tokenize

                tokens = tokenize(chunk_t, plan.preset.max_words).to(plan.device)
                text_l.append(model.clip.encode_text(tokens).float())
        text = torch.cat(text_l)
        mask_all = torch.cat(mask_l)
        if head.loose:
            video = torch.cat(video_l)
            sim = torch.cat([head.loose_logits(text[i:i + 4096], video).float().cpu()
                             for i in range(0, len(text), 4096)])
        else:
            sim = head.similarity(text, torch.cat(frames_l), mask_all).float().cpu()
    t2v = None if len(texts) == len(ids) and data.test_t2v == list(range(len(ids))) else data.test_t2v
    metrics = t2v_v2t(sim, t2v)
    weights: dict[str, np.ndarray] = {"mask": mask_all.cpu().numpy().astype(np.float32)}
    for key in ("gates", "weights"):
        if aux_l and key in aux_l[0]:
            weights[key] = torch.cat([a[key] for a in aux_l]).numpy().astype(np.float32)
    if reporter is not None:
        reporter.hide(task)
    return metrics, weights


def _frame_weights_npz(path: Path, data: _Data, weights: dict[str, np.ndarray]) -> Path:
    first_text: dict[int, str] = {}
    for t, v in zip(data.test_texts, data.test_t2v):
        first_text.setdefault(v, t)
    np.savez(path, video_ids=np.array(data.test_ids, dtype=str),
             texts=np.array([first_text[i] for i in range(len(data.test_ids))], dtype=str),
             frame_times=np.stack([data.cache.times(v) for v in data.test_ids]).astype(np.float32),
             **weights)
    return path


# ----------------------------------------------------------------------------------------------
# tracking schema


def _flat(metrics: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{d}/{k}": float(v) for d in ("t2v", "v2t") for k, v in metrics[d].items()}


def _params(plan: _Plan, backbone: Any, data: _Data, steps_per_epoch: int) -> dict[str, Any]:
    from harness.tracking import git_commit

    p = plan.preset
    params: dict[str, Any] = dict(plan.spec.as_params())
    params.update({f"preset.{k}": v for k, v in p.to_dict().items()})
    params.update({
        "dataset": plan.cfg.dataset, "protocol": plan.cfg.protocol, "backbone": plan.backbone,
        "weights": str(plan.weights) if plan.weights else "random",
        "weights_sha256": backbone.weights_sha256 or "random", "seed": p.seed,
        "epochs": p.epochs, "batch_size": p.batch_size, "lr": p.lr, "coef_lr": p.coef_lr,
        "max_frames": p.max_frames, "max_words": p.max_words, "numerics": plan.numerics,
        "optimizer": plan.optimizer, "git_commit": git_commit(),
        "frame_cache": str(data.cache.path), "data_root": str(Path(plan.cfg.root).resolve()),
        "train_videos": len(data.train), "test_videos": len(data.test_ids),
        "test_texts": len(data.test_texts), "steps_per_epoch": steps_per_epoch,
        "failed_videos_train": len(data.failed_train), "failed_videos_test": len(data.failed_test),
        "world_size": dist_utils.dist_info().world_size, "compile": plan.cfg.compile,
        "grad_checkpointing": plan.cfg.grad_checkpointing,
        "limit_train": plan.cfg.limit_train, "limit_test": plan.cfg.limit_test,
    })
    return params


def _tags(plan: _Plan, extra: dict[str, Any] | None) -> dict[str, Any]:
    row = plan.rows[0] if plan.rows else None
    tags = {"variant": plan.spec.name, "temporal": plan.spec.temporal, "dataset": plan.cfg.dataset,
            "protocol": plan.cfg.protocol, "paper_table": row.table if row else "",
            "paper_label": row.label if row else "", "seed": str(plan.preset.seed),
            "numerics": plan.numerics, "eabench.kind": "train"}
    tags.update(extra or {})
    return tags


# ----------------------------------------------------------------------------------------------
# the run


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def run_training(
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Train ``cfg.variant`` and evaluate after every epoch; one MLflow run; returns the best epoch.

    ``on_epoch(epoch, metrics)`` gets the flat per-epoch metrics (``train/loss``, ``train/lr``,
    ``t2v/R1`` ...) after the epoch's checkpoint is written. If it raises ``StopRun`` or
    ``optuna.TrialPruned`` the run is ended KILLED; any other exception ends it FAILED; either
    way the exception propagates. ``cfg.resume = RUN_ID`` continues a killed run from its last
    checkpoint (the saved config wins over ``cfg`` except device/tracking/progress settings).
    """
    from harness.tracking import NullTracker, RunTracker, configure, status_for_exception

    t_start = time.perf_counter()
    state: dict[str, Any] | None = None
    if cfg.resume:
        path = ckpt.checkpoint_dir(cfg.tracking_root, cfg.resume) / ckpt.LAST
        if not path.is_file():
            raise EABenchError(
                f"--resume {cfg.resume}: no resumable checkpoint at {path} (a finished run deletes "
                f"it unless trained with keep_last; a run killed before its first epoch ended has "
                f"none; check --tracking-root)")
        state = ckpt.load(path)
        saved = TrainConfig.from_dict(state["config"])
        cfg = dataclasses.replace(saved, resume=cfg.resume, device=cfg.device,
                                  tracking_root=cfg.tracking_root,
                                  tracking_uri=cfg.tracking_uri or saved.tracking_uri,
                                  progress=cfg.progress)
    plan = resolve_config(cfg)
    info = dist_utils.init_from_env(str(plan.device))
    if info.enabled and plan.device.type == "cuda":
        plan = dataclasses.replace(plan, device=torch.device("cuda", info.local_rank))
    if plan.preset.batch_size % info.world_size:
        raise ConfigError(f"batch size {plan.preset.batch_size} is not divisible by the "
                          f"{info.world_size} processes; the global batch is split evenly")
    p = plan.preset
    _seed_all(p.seed)

    if not plan.rows and info.is_main:
        # Allowed on purpose (searches try other ratios), but a typo must not pass unnoticed.
        from variants import list_variants

        close = difflib.get_close_matches(cfg.variant, list_variants("*"), n=3, cutoff=0.5)
        log(f"note: {cfg.variant} is a valid design but not a row of the paper's tables"
            + (f" (closest rows: {', '.join(close)})" if close else ""))
    reporter = Reporter(enabled=info.is_main and cfg.progress)
    with reporter:
        records = _read_records(plan)
        backbone = _load_backbone(plan)
        backbone.to(plan.device)
        data = _prepare_data(plan, records, backbone.image_size, reporter)
        feats = None
        if cfg.protocol == "frozen":
            feats = _frozen_features(plan, backbone, data, reporter)
        _seed_all(p.seed)  # model init does not depend on what the data preparation consumed
        model = _build_model(plan, backbone)
        n_pairs = len(_epoch_pairs(data, p.expand_sentences, p.seed, 0))
        batch = p.batch_size
        steps_per_epoch = n_pairs // batch
        if steps_per_epoch == 0:
            raise ConfigError(f"batch size {batch} exceeds the {n_pairs} training pairs of "
                              f"{cfg.dataset}; lower --batch-size")
        t_total = steps_per_epoch * p.epochs

        from harness.optim import build_optimizer, group_lrs, param_groups

        groups = param_groups(model.named_parameters(), lr=p.lr, coef_lr=p.coef_lr,
                              weight_decay=p.weight_decay, is_clip=_is_clip_param(cfg.protocol))
        optimizer, scheduler = build_optimizer(
            plan.optimizer, groups, t_total=t_total, warmup=p.warmup_proportion,
            max_grad_norm=p.max_grad_norm,
            fused=plan.device.type == "cuda" and plan.numerics == "fast")
        train_model: nn.Module = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[plan.device.index] if plan.device.type == "cuda"
                              else None, find_unused_parameters=True)

        start_epoch, best, history, skipped = 0, {"epoch": -1, "t2v/R1": -1.0}, [], 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            start_epoch = state["epoch"] + 1
            best, history, skipped = state["best"], state["history"], state["skipped"]

        # -- tracking (rank 0 only) --------------------------------------------------------
        tracker: Any
        if info.is_main:
            target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri, cfg.experiment)
            if cfg.resume:
                tracker = RunTracker.resume(target, cfg.resume)
                tracker.set_tags({"resumed_from_epoch": str(start_epoch)})
            else:
                tracker = RunTracker.start(target, run_name=run_name or f"{plan.spec.name}/{cfg.dataset}/"
                                           f"{cfg.protocol}", tags=_tags(plan, tags),
                                           parent_run_id=parent_run_id)
        else:
            tracker = NullTracker()
        run_id = dist_utils.broadcast_object(tracker.run_id)
        cdir = ckpt.checkpoint_dir(cfg.tracking_root, run_id)
        if state is not None:
            ckpt.set_rng_state(state["rng"])

        try:
            if not cfg.resume:
                tracker.log_params(_params(plan, backbone, data, steps_per_epoch))
                tracker.log_json({"config": cfg.to_dict(), "preset": p.to_dict(),
                                  "variant": plan.spec.to_dict(), "numerics": plan.numerics,
                                  "optimizer": plan.optimizer, "failed_videos":
                                  {**data.failed_train, **data.failed_test}}, "config.json")
            batches = _Batches(plan, data, feats)
            epoch_task = reporter.add("epochs", p.epochs)
            reporter.advance(epoch_task, start_epoch)
            step_task = reporter.add("steps", steps_per_epoch)
            try:
                for epoch in range(start_epoch, p.epochs):
                    reporter.reset(step_task, f"epoch {epoch + 1}/{p.epochs}", steps_per_epoch)
                    loss, skipped_now = _train_epoch(train_model, model, optimizer, scheduler, plan,
                                                     data, batches, epoch, steps_per_epoch,
                                                     reporter, step_task, cdir)
                    skipped += skipped_now
                    lr_now = group_lrs(optimizer)  # the schedule at the end of the epoch
                    metrics, weights = (_score(model, plan, data, feats, reporter) if info.is_main
                                        else (None, None))
                    metrics = dist_utils.broadcast_object(metrics)
                    row = {"epoch": epoch, "train/loss": loss,
                           "train/lr": lr_now.get("new_decay", next(iter(lr_now.values()))),
                           "train/skipped_steps": float(skipped), **_flat(metrics)}
                    if "clip_decay" in lr_now:
                        row["train/lr_clip"] = lr_now["clip_decay"]
                    history.append(row)
                    tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                    if metrics["t2v"]["R1"] > best["t2v/R1"]:
                        best = {"epoch": epoch, **_flat(metrics)}
                        if info.is_main:
                            ckpt.save_atomic({"config": cfg.to_dict(), "epoch": epoch,
                                              "model": model.state_dict(), "metrics": metrics,
                                              "run_id": run_id}, cdir / ckpt.BEST)
                            with tempfile.TemporaryDirectory() as tmp:
                                tracker.log_artifact(_frame_weights_npz(
                                    Path(tmp) / "frame_weights.npz", data, weights))
                    if info.is_main:
                        ckpt.save_atomic({
                            "config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "rng": ckpt.rng_state(), "best": best, "history": history,
                            "skipped": skipped, "run_id": run_id}, cdir / ckpt.LAST)
                    dist_utils.barrier()
                    reporter.advance(epoch_task, 1)
                    log(f"epoch {epoch + 1}/{p.epochs}: loss {loss:.4f}  t2v R@1 "
                        f"{metrics['t2v']['R1']:.1f}  v2t R@1 {metrics['v2t']['R1']:.1f}"
                        + (f"  ({skipped} steps skipped)" if skipped else ""))
                    if on_epoch is not None:
                        on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            finally:
                batches.close()
            best_metrics = {k: v for k, v in best.items() if k != "epoch"}
            tracker.log_metrics({f"best/{k}": v for k, v in best_metrics.items()}
                                | {"best_epoch": float(best["epoch"])}, step=int(best["epoch"]))
            tracker.log_json(history, "history.json")
            if cfg.save_checkpoint and info.is_main:
                tracker.log_artifact(cdir / ckpt.BEST, "checkpoint")
            tracker.end("FINISHED")
        except BaseException as exc:
            tracker.end(status_for_exception(exc))
            raise
    if info.is_main and not cfg.keep_last:
        (cdir / ckpt.LAST).unlink(missing_ok=True)
    return TrainResult(
        run_id=run_id, variant=plan.spec.name, dataset=cfg.dataset, protocol=cfg.protocol,
        best_epoch=int(best["epoch"]),
        t2v={k.split("/", 1)[1]: v for k, v in best.items() if k.startswith("t2v/")},
        v2t={k.split("/", 1)[1]: v for k, v in best.items() if k.startswith("v2t/")},
        history=history, numerics=plan.numerics, skipped_steps=skipped,
        failed_videos={**data.failed_train, **data.failed_test},
        seconds=time.perf_counter() - t_start)


def _frozen_features(plan: _Plan, backbone: Any, data: _Data, reporter: Reporter) -> Any:
    from harness.features import feature_dir, feature_key, load_features, write_meta

    p = plan.preset
    video_ids = list(dict.fromkeys([r.video_id for r in data.train] + data.test_ids))
    texts = list(dict.fromkeys([t for r in data.train for t in r.texts] + data.test_texts))
    store = None
    if backbone.weights_sha256:
        key = feature_key(plan.backbone, backbone.weights_sha256, data.cache.settings, p.max_words)
        store = feature_dir(plan.cache_root, plan.cfg.dataset, key)
    info = dist_utils.dist_info()

    def compute() -> Any:
        table = load_features(backbone, data.cache, video_ids, texts, max_words=p.max_words,
                              store=store, device=plan.device, batch_size=plan.cfg.eval_batch_size,
                              reporter=reporter)
        if store is not None and info.is_main:
            write_meta(store, {"backbone": plan.backbone, "weights_sha256": backbone.weights_sha256,
                               "frames": data.cache.settings.key(), "max_words": p.max_words})
        return table

    if info.enabled and not info.is_main:
        dist_utils.barrier()
        table = compute()
    else:
        table = compute()
        if info.enabled:
            dist_utils.barrier()
    return table.to(plan.device)


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


def _train_epoch(train_model: nn.Module, model: RetrievalModel, optimizer: torch.optim.Optimizer,
                 scheduler: Any, plan: _Plan, data: _Data, batches: _Batches, epoch: int,
                 steps: int, reporter: Reporter, task: int, cdir: Path) -> tuple[float, int]:
    """One epoch; returns (mean finite loss, steps skipped for a non-finite loss or gradient)."""
    info = dist_utils.dist_info()
    p = plan.preset
    pairs = _epoch_pairs(data, p.expand_sentences, p.seed, epoch)
    local = p.batch_size // info.world_size
    chunks = []
    for s in range(steps):
        glob = pairs[s * p.batch_size:(s + 1) * p.batch_size]
        chunks.append(glob[info.rank * local:(info.rank + 1) * local])
    train_model.train()
    total, n_ok, skipped, in_a_row = 0.0, 0, 0, 0
    for step, batch in enumerate(batches.iterate(chunks)):
        loss, applied = train_step(train_model, model, optimizer, scheduler, batch, p.max_grad_norm)
        if applied:
            in_a_row = 0
            total += loss
            n_ok += 1
        else:
            skipped += 1
            in_a_row += 1
            log(f"epoch {epoch} step {step}: non-finite loss or gradient ({loss}); step skipped")
            if in_a_row >= plan.cfg.max_nonfinite_steps:
                last = (f"{cdir / ckpt.LAST} (end of epoch {epoch - 1})" if epoch > 0
                        else "none (no epoch finished)")
                raise TrainingDiverged(
                    f"stopped at epoch {epoch} step {step}: {in_a_row} steps in a row had a "
                    f"non-finite loss or gradient; the last good checkpoint is {last}; lower the "
                    f"learning rate (--set lr=...), or try --numerics fast")
        reporter.advance(task, 1, items=len(batch[0]) * info.world_size, info=f"loss {loss:.4f}")
    return (total / n_ok if n_ok else float("nan")), skipped


# ----------------------------------------------------------------------------------------------
# re-evaluation


def evaluate(run_id: str | None = None, checkpoint: Path | str | None = None, *,
             tracking_root: str = "runs", device: str = "auto", progress: bool = True,
             root: str | None = None) -> TrainResult:
    """Re-evaluate the best epoch of a run (its ``best.pt``) on its test split.

    ``root`` overrides the data root saved in the checkpoint (data moved since training).
    """
    if (run_id is None) == (checkpoint is None):
        raise ConfigError("give exactly one of --run RUN_ID or --checkpoint PATH")
    path = Path(checkpoint) if checkpoint else ckpt.checkpoint_dir(tracking_root, run_id) / ckpt.BEST
    state = ckpt.load(path)
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an eabench training checkpoint (no config/model)")
    cfg = TrainConfig.from_dict(state["config"])
    cfg = dataclasses.replace(cfg, device=device, progress=progress, resume=None,
                              root=root or cfg.root)
    plan = resolve_config(cfg)
    _seed_all(plan.preset.seed)
    reporter = Reporter(enabled=progress)
    with reporter:
        records = _read_records(plan)
        backbone = _load_backbone(plan)
        backbone.to(plan.device)
        data = _prepare_data(plan, records, backbone.image_size, reporter)
        feats = _frozen_features(plan, backbone, data, reporter) if cfg.protocol == "frozen" else None
        model = _build_model(plan, backbone)
        model.load_state_dict(state["model"])
        metrics, _ = _score(model, plan, data, feats, reporter)
    return TrainResult(run_id=state.get("run_id", run_id or ""), variant=plan.spec.name,
                       dataset=cfg.dataset, protocol=cfg.protocol, best_epoch=int(state["epoch"]),
                       t2v=metrics["t2v"], v2t=metrics["v2t"], numerics=plan.numerics,
                       failed_videos={**data.failed_train, **data.failed_test})


def result_json(result: TrainResult) -> str:
    """The one-line JSON ``--json`` prints (NaN/inf become null, so it stays valid JSON)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    d = {k: getattr(result, k) for k in ("run_id", "variant", "dataset", "protocol", "best_epoch",
                                         "t2v", "v2t", "numerics", "skipped_steps", "seconds")}
    d["failed_videos"] = len(result.failed_videos)
    return json.dumps(clean(d))
