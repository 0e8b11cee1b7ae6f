"""Frozen-protocol feature cache: CLIP frame and text features computed once, reused by every run.

Key: backbone name, weights SHA-256, frame settings and ``max_words`` (the tokenizer truncation),
so a different checkpoint or sampling never reuses stale features. Layout::

    <cache_root>/features/<dataset>/<key>/videos.pt   {"ids": [...], "frames": [N,T,D], "mask": [N,T]}
    <cache_root>/features/<dataset>/<key>/texts.pt    {"texts": [...], "feats": [M,D]}
    <cache_root>/features/<dataset>/<key>/meta.json   what the key stands for

Files grow incrementally: only ids/texts not yet present are encoded. Features are computed in
fp32 (no autocast) in eval mode. Padded frames are encoded through CLIP like real ones (as
CLIP4Clip does with its zero-padded frames); the mask says which are real. A backbone without a
weights hash (a random tiny CLIP) is never written to disk. A caller that trains many times in one
process (a study worker) passes a ``memory`` dict that it owns (``harness.train.resources``), so
the files are read once per process; nothing is kept at module level.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.files import save_atomic

__all__ = [
    "FeatureTable",
    "encode_texts",
    "encode_videos",
    "feature_dir",
    "feature_key",
    "load_features",
]

@dataclass
class FeatureTable:
    video_ids: list[str]
    frames: torch.Tensor            # [N, T, D] float32
    mask: torch.Tensor              # [N, T] float32
    texts: list[str]
    text: torch.Tensor              # [M, D] float32
    index: dict[str, int] = field(default_factory=dict)
    text_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {v: i for i, v in enumerate(self.video_ids)}
        self.text_index = {t: i for i, t in enumerate(self.texts)}

    def to(self, device: torch.device) -> FeatureTable:
        return FeatureTable(self.video_ids, self.frames.to(device), self.mask.to(device), self.texts,
                            self.text.to(device))


def feature_key(model_name: str, weights_sha256: str, settings: Any, max_words: int) -> str:
    blob = json.dumps({"backbone": model_name, "weights_sha256": weights_sha256,
                       "frames": settings.key(), "max_words": max_words, "precision": "fp32",
                       "version": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def feature_dir(cache_root: Path, dataset: str, key: str) -> Path:
    return Path(cache_root) / "features" / dataset / key


@torch.no_grad()
def encode_videos(backbone: Any, cache: Any, video_ids: Sequence[str], *, device: torch.device,
                  batch_size: int = 64, reporter: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[N,T,D] fp32 frame features and [N,T] masks (CPU) of ``video_ids`` from the frame cache."""
    was_training = backbone.training
    backbone.eval()
    task = reporter.add("encode videos", len(video_ids)) if reporter is not None else None
    feats, masks = [], []
    for i in range(0, len(video_ids), batch_size):
        ids = list(video_ids[i:i + batch_size])
        pixels, mask = cache.batch(ids, device)
        feats.append(backbone.encode_frames(pixels).float().cpu())
        masks.append(mask.float().cpu())
        if reporter is not None:
            reporter.advance(task, len(ids), items=len(ids))
    backbone.train(was_training)
    if not feats:
        d = backbone.embed_dim
        t = cache.settings.max_frames
        return torch.zeros(0, t, d), torch.zeros(0, t)
    return torch.cat(feats), torch.cat(masks)


@torch.no_grad()
def encode_texts(backbone: Any, texts: Sequence[str], max_words: int, *, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """[M,D] fp32 text features (CPU)."""
    from harness.text import tokenize

    was_training = backbone.training
    backbone.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenize(list(texts[i:i + batch_size]), max_words).to(device)
        out.append(backbone.encode_text(tokens).float().cpu())
    backbone.train(was_training)
    if not out:
        return torch.zeros(0, backbone.embed_dim)
    return torch.cat(out)


def _read(path: Path, empty: dict[str, Any]) -> dict[str, Any]:
    if path.is_file():
        try:
            # weights_only: a planted file cannot run code; anything it refuses is recomputed
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):  # damaged: recompute
            return empty
        if isinstance(obj, dict) and set(empty) <= set(obj) and _consistent(obj):
            return obj
    return empty


def _consistent(table: dict[str, Any]) -> bool:
    """One feature row per id/text (a truncated or foreign file is recomputed, not trusted)."""
    names = table.get("ids", table.get("texts"))
    tensors = [v for k, v in table.items() if k not in ("ids", "texts")]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return False
    if not names:
        return all(t is None or (torch.is_tensor(t) and t.shape[0] == 0) for t in tensors)
    return all(torch.is_tensor(t) and t.shape[0] == len(names) for t in tensors)


def load_features(backbone: Any, cache: Any, video_ids: Sequence[str], texts: Sequence[str], *,
                  max_words: int, store: Path | None, device: torch.device, batch_size: int = 64,
                  reporter: Any = None, memory: dict[str, Any] | None = None) -> FeatureTable:
    """Features of exactly ``video_ids`` and ``texts`` (in that order), encoding what is missing.

    ``store`` is the key's folder (see :func:`feature_dir`); None keeps nothing on disk.
    ``memory`` (owned by the caller) keeps the loaded tables between calls, keyed by ``store``.
    """
    skey = str(store) if store is not None else None
    if skey is not None and memory is not None and skey in memory:
        vids, txts = memory[skey]
    elif store is not None:
        vids = _read(store / "videos.pt", {"ids": [], "frames": None, "mask": None})
        txts = _read(store / "texts.pt", {"texts": [], "feats": None})
    else:
        vids = {"ids": [], "frames": None, "mask": None}
        txts = {"texts": [], "feats": None}

    have_v = set(vids["ids"])
    missing_v = [v for v in dict.fromkeys(video_ids) if v not in have_v]
    have_t = set(txts["texts"])
    missing_t = [t for t in dict.fromkeys(texts) if t not in have_t]
    changed = False
    if missing_v:
        f, m = encode_videos(backbone, cache, missing_v, device=device, batch_size=batch_size,
                             reporter=reporter)
        vids = {"ids": vids["ids"] + missing_v,
                "frames": f if vids["frames"] is None else torch.cat([vids["frames"], f]),
                "mask": m if vids["mask"] is None else torch.cat([vids["mask"], m])}
        changed = True
    if missing_t:
        f = encode_texts(backbone, missing_t, max_words, device=device, batch_size=max(batch_size, 256))
        txts = {"texts": txts["texts"] + missing_t,
                "feats": f if txts["feats"] is None else torch.cat([txts["feats"], f])}
        changed = True
    if store is not None:
        if changed:
            store.mkdir(parents=True, exist_ok=True)
            save_atomic(vids, store / "videos.pt")
            save_atomic(txts, store / "texts.pt")
        if memory is not None:
            memory[str(store)] = (vids, txts)

    vpos = {v: i for i, v in enumerate(vids["ids"])}
    tpos = {t: i for i, t in enumerate(txts["texts"])}
    vi = torch.tensor([vpos[v] for v in video_ids], dtype=torch.long)
    ti = torch.tensor([tpos[t] for t in texts], dtype=torch.long)
    d = backbone.embed_dim
    frames = vids["frames"][vi] if vids["frames"] is not None else torch.zeros(0, 1, d)
    mask = vids["mask"][vi] if vids["mask"] is not None else torch.zeros(0, 1)
    text = txts["feats"][ti] if txts["feats"] is not None else torch.zeros(0, d)
    return FeatureTable(list(video_ids), frames, mask, list(texts), text)


def write_meta(store: Path, meta: dict[str, Any]) -> None:
    store.mkdir(parents=True, exist_ok=True)
    (store / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
