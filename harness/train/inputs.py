"""A run's inputs: records, the frame cache, frozen features and the batches of each step.

``read_records`` reads the annotation files (cheap; fails early on missing files).
``prepare_inputs`` makes sure every listed video is in the frame cache (decoding what is missing
on rank 0, once) and drops the unreadable ones, counted. ``frozen_features`` encodes CLIP
features once for the frozen protocol. ``Batches`` turns each step's (video, text) pairs into
model inputs, reading the next pixel batch in a thread while the current one trains.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import distributed as dist_utils
from harness.console import Reporter, log
from harness.data.feature_cache import FeatureTable, feature_dir, feature_key, load_features, write_meta
from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings, normalize
from harness.data.moments import Interval, record_moments
from harness.data.readers import read_dataset
from harness.data.records import VideoRecord, too_few_readable, training_pairs
from harness.errors import DataError
from harness.text import tokenize
from harness.train.config import Protocol
from harness.train.model import load_backbone
from harness.train.plan import RunPlan
from harness.train.resources import Resources

__all__ = ["Batch", "Batches", "Prepared", "TrainInputs", "epoch_pairs", "frozen_features", "prepare",
           "prepare_inputs",
           "read_records", "step_chunks"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # video (pixels or features), mask, text


@dataclass
class TrainInputs:
    train: list[VideoRecord]               # records whose video is in the cache
    test_ids: list[str]
    test_texts: list[str]                  # every caption of every test video
    test_t2v: list[int]                    # video index of each test caption
    cache: FrameCache
    failed_train: dict[str, str]
    failed_test: dict[str, str]
    # per test video, the (start_s, end_s) moments people annotated (DiDeMo, ActivityNet)
    test_moments: list[tuple[Interval, ...]] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, str]:
        return {**self.failed_train, **self.failed_test}


def read_records(plan: RunPlan) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """The train and test records (annotation files only; fails early on missing files)."""
    p, cfg = plan.preset, plan.cfg
    train = read_dataset(cfg.dataset, cfg.root, p.train_split, cfg.videos)
    test = read_dataset(cfg.dataset, cfg.root, p.test_split, cfg.videos)
    if cfg.limit_train:
        train = train[: cfg.limit_train]
    if cfg.limit_test:
        test = test[: cfg.limit_test]
    return train, test


def _open_cache(plan: RunPlan, records: list[VideoRecord], settings: FrameSettings,
                reporter: Reporter, resources: Resources) -> FrameCache:
    cfg = plan.cfg
    key = (str(plan.cache_root.resolve()), cfg.dataset, settings)
    wanted = {r.video_id for r in records}

    def covers(c: FrameCache | None) -> bool:
        return c is not None and wanted <= (set(c.video_ids) | set(c.failed))

    cache = resources.frame_caches.get(key)
    if covers(cache):
        return cache
    if dist_utils.dist_info().is_main:
        try:
            cache = FrameCache.open(plan.cache_root, settings, cfg.dataset)
        except DataError:
            cache = None
        if not covers(cache):
            log(f"frame cache: decoding videos of {cfg.dataset} into {plan.cache_root}")
            FrameCache.build(records, settings, plan.cache_root, workers=cfg.workers,
                             dataset=cfg.dataset, progress=reporter.live)
    dist_utils.barrier()
    cache = FrameCache.open(plan.cache_root, settings, cfg.dataset)
    resources.frame_caches[key] = cache
    return cache


def prepare_inputs(plan: RunPlan, records: tuple[list[VideoRecord], list[VideoRecord]], image_size: int,
                   reporter: Reporter, resources: Resources) -> TrainInputs:
    """Every video in the frame cache; unreadable ones are dropped and counted, never fatal."""
    p, cfg = plan.preset, plan.cfg
    train, test = records
    settings = FrameSettings(max_frames=p.max_frames, fps=p.feature_framerate,
                             slice_framepos=p.slice_framepos, image_size=image_size)
    cache = _open_cache(plan, [*train, *test], settings, reporter, resources)
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
    for role, split, recs in (("train", p.train_split, train), ("test", p.test_split, test)):
        short = too_few_readable(role, len(recs))
        if short:
            raise DataError(f"{cfg.dataset} {split}: {short} (under {cfg.root}); "
                            f"`eabench data check {cfg.dataset} --root DIR` lists what is missing")
    texts, t2v = [], []
    for i, r in enumerate(test):
        for t in r.texts:
            texts.append(t)
            t2v.append(i)
    return TrainInputs(train, [r.video_id for r in test], texts, t2v, cache, failed_train, failed_test,
                       [record_moments(r.extra) for r in test])


def epoch_pairs(inputs: TrainInputs, expand: bool, seed: int, epoch: int) -> list[tuple[str, str]]:
    """This epoch's (video, text) samples in training order; a pure function of (seed, epoch)."""
    pairs = training_pairs(inputs.train, expand, random.Random(seed * 1_000_003 + epoch))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(pairs), generator=g).tolist()
    return [pairs[i] for i in order]


def step_chunks(pairs: list[tuple[str, str]], batch_size: int, steps: int
                ) -> list[list[tuple[str, str]]]:
    """This rank's share of each step's global batch (drop_last, as CLIP4Clip)."""
    info = dist_utils.dist_info()
    local = batch_size // info.world_size
    out = []
    for s in range(steps):
        glob = pairs[s * batch_size:(s + 1) * batch_size]
        out.append(glob[info.rank * local:(info.rank + 1) * local])
    return out


def frozen_features(plan: RunPlan, backbone: Any, inputs: TrainInputs, reporter: Reporter,
                    resources: Resources) -> FeatureTable:
    """CLIP features of every train/test video and text, computed once (rank 0 first)."""
    p = plan.preset
    video_ids = list(dict.fromkeys([r.video_id for r in inputs.train] + inputs.test_ids))
    texts = list(dict.fromkeys([t for r in inputs.train for t in r.texts] + inputs.test_texts))
    store = None
    if backbone.weights_sha256:
        key = feature_key(plan.backbone, backbone.weights_sha256, inputs.cache.settings, p.max_words)
        store = feature_dir(plan.cache_root, plan.cfg.dataset, key)
    info = dist_utils.dist_info()

    def compute() -> FeatureTable:
        table = load_features(backbone, inputs.cache, video_ids, texts, max_words=p.max_words,
                              store=store, device=plan.device, batch_size=plan.eval_batch_size,
                              reporter=reporter, memory=resources.feature_tables)
        if store is not None and info.is_main:
            write_meta(store, {"backbone": plan.backbone, "weights_sha256": backbone.weights_sha256,
                               "frames": inputs.cache.settings.key(), "max_words": p.max_words})
        return table

    if info.enabled and not info.is_main:
        dist_utils.barrier()
        table = compute()
    else:
        table = compute()
        if info.enabled:
            dist_utils.barrier()
    return table.to(plan.device)


class Batches:
    """Turns (video_id, text) pairs into model inputs; prefetches pixel batches in a thread."""

    def __init__(self, plan: RunPlan, inputs: TrainInputs, feats: FeatureTable | None) -> None:
        self.plan, self.inputs, self.feats = plan, inputs, feats
        self.device = plan.device
        self._pool = ThreadPoolExecutor(max_workers=1) if feats is None else None
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}

    def _load(self, pairs: list[tuple[str, str]], slot: int = 0) -> Batch:
        ids = [v for v, _ in pairs]
        texts = [t for _, t in pairs]
        if self.feats is not None:
            vi = torch.tensor([self.feats.index[v] for v in ids], device=self.feats.frames.device)
            ti = torch.tensor([self.feats.text_index[t] for t in texts], device=self.feats.text.device)
            return self.feats.frames[vi], self.feats.mask[vi], self.feats.text[ti]
        # Two reused (pinned on CUDA) uint8 buffers alternate: batch i+1 is read into one while
        # batch i, already copied, trains. The step's loss.item() syncs, so a buffer is never
        # overwritten while its host-to-device copy is in flight.
        buf = self._buffers.get((slot, len(ids)))
        s, t = self.inputs.cache.settings.image_size, self.inputs.cache.settings.max_frames
        if buf is None:
            buf = torch.empty((len(ids), t, 3, s, s), dtype=torch.uint8,
                              pin_memory=self.device.type == "cuda")
            self._buffers[(slot, len(ids))] = buf
        pix, mask = self.inputs.cache.batch_uint8(ids, out=buf)
        return pix, mask, tokenize(texts, self.plan.preset.max_words)

    def _finish(self, item: Batch) -> Batch:
        if self.feats is not None:
            return item
        pix, mask, tokens = item
        pix = pix.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        return normalize(pix, mask), mask, tokens.to(self.device, non_blocking=True)

    def iterate(self, batches: list[list[tuple[str, str]]]) -> Iterator[Batch]:
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


@dataclass
class Prepared:
    """What a run computes on before its model exists: CLIP, the inputs, frozen features."""

    backbone: Any
    inputs: TrainInputs
    feats: FeatureTable | None


def prepare(plan: RunPlan, reporter: Reporter, resources: Resources) -> Prepared:
    """Records, CLIP (on the plan's device), the frame cache and (frozen protocol) CLIP features."""
    records = read_records(plan)
    backbone = load_backbone(plan, resources)
    backbone.to(plan.device)
    inputs = prepare_inputs(plan, records, backbone.image_size, reporter, resources)
    feats = (frozen_features(plan, backbone, inputs, reporter, resources)
             if plan.protocol is Protocol.FROZEN else None)
    return Prepared(backbone, inputs, feats)
