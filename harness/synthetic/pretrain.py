"""Short contrastive pre-training of the tiny CLIP for the synthetic benchmark.

The paper fine-tunes a CLIP that already aligns images and words (OpenAI's ViT-B/32). The
synthetic benchmark mirrors that: before any video training, ``eabench-tiny`` learns to match
single relevant frames of the *train* split with their object phrases ("a red circle"), the same
symmetric InfoNCE as CLIP. Frames are rendered with the benchmark's drawing code (no decoding) and
preprocessed like the frame loader (bicubic resize of the short side, centre crop, CLIP mean/std).
Every batch holds each object type of the train split once, so a batch has no false negatives.

The result is written to ``<root>/clip/eabench-tiny.safetensors`` with ``eabench-tiny.json``
beside it (steps, seed, final loss, zero-shot accuracy of test-split frames against all object
phrases). Same seed, same machine → same bytes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.backbone import TINY_CLIP, ClipBackbone, load_clip, save_clip
from harness.errors import DataError
from harness.synthetic.render import object_phrase, render_object_frame
from harness.synthetic.truth import TRUTH_FILE, load_truth
from harness.text import tokenize

__all__ = ["CLIP_MEAN", "CLIP_STD", "checkpoint_path", "preprocess_frames", "pretrain_tiny_clip"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_POOL_PER_OBJECT = 48     # pre-rendered frames per object type (rendering once is cheaper)
_TEXT_LEN = 8             # "a <colour> <shape>" is 3-4 BPE tokens


def checkpoint_path(root: Path) -> Path:
    return Path(root) / "clip" / f"{TINY_CLIP}.safetensors"


def preprocess_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] → CLIP-normalised float [N, 3, size, size] (short side, centre crop)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _object_types(truth: dict[str, Any], split: str) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for video in truth["videos"].values():
        if video.get("split") == split:
            for obj in video["objects"]:
                seen[(obj["color"], obj["shape"])] = None
    return list(seen)


def _render_pool(types: list[tuple[str, str]], per: int, rng: np.random.Generator,
                 cfg: dict[str, Any], size: int) -> torch.Tensor:
    imgs = [render_object_frame(rng, c, s, cfg["width"], cfg["height"]) for c, s in types for _ in range(per)]
    return preprocess_frames(np.stack(imgs), size).view(len(types), per, 3, size, size)


def _phrases(types: list[tuple[str, str]]) -> torch.Tensor:
    return tokenize([f"a {object_phrase(c, s)}" for c, s in types], _TEXT_LEN)


@torch.no_grad()
def _zero_shot_accuracy(model: ClipBackbone, truth: dict[str, Any], rng: np.random.Generator) -> float:
    """Test-split object frames classified among all object phrases of the vocabulary."""
    cfg = truth["config"]
    vocab = [(c, s) for c in cfg["colors"] for s in cfg["shapes"]]
    test_types = _object_types(truth, "test")
    if not test_types:
        return float("nan")
    pixels = _render_pool(test_types, 4, rng, cfg, model.image_size).flatten(0, 1)
    labels = torch.tensor([vocab.index(t) for t in test_types]).repeat_interleave(4)
    img = F.normalize(model.encode_frames(pixels.unsqueeze(1)).squeeze(1), dim=-1)
    txt = F.normalize(model.encode_text(_phrases(vocab)), dim=-1)
    return float((img @ txt.T).argmax(dim=1).eq(labels).float().mean())


def pretrain_tiny_clip(root: Path, *, steps: int, seed: int, device: str = "cpu",
                       lr: float = 1e-3, progress: bool = False) -> Path:
    """Pre-train ``eabench-tiny`` on train-split frames of the benchmark under ``root``."""
    root = Path(root)
    truth = load_truth(root)
    truth_path = root / TRUTH_FILE
    types = _object_types(truth, "train")
    if len(types) < 2:
        raise DataError(f"{truth_path}: the train split has {len(types)} object types; need at least 2")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical across machines' core counts; a tiny model loses little
    try:
        return _pretrain(root, truth, types, steps=steps, seed=seed, device=device, lr=lr,
                         progress=progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(root: Path, truth: dict[str, Any], types: list[tuple[str, str]], *, steps: int,
              seed: int, device: str, lr: float, progress: bool) -> Path:
    cfg = truth["config"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    model = load_clip(TINY_CLIP).to(device).train()
    pool = _render_pool(types, _POOL_PER_OBJECT, rng, cfg, model.image_size)
    tokens = _phrases(types).to(device)
    labels = torch.arange(len(types), device=device)
    # The 49408-row token table dominates a dense Adam step although a batch uses ~15 rows:
    # sparse gradients + SparseAdam touch only those rows (several times faster on CPU).
    emb = model.model.token_embedding
    emb.sparse = True
    dense = [p for n, p in model.model.named_parameters() if not n.startswith("token_embedding.")]
    opts = [torch.optim.AdamW(dense, lr=lr, weight_decay=0.1), torch.optim.SparseAdam([emb.weight], lr=lr)]
    warmup = max(1, steps // 10)

    def schedule(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in opts]
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []

    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("pre-training eabench-tiny", total=steps)
        for _ in range(steps):
            pick = torch.randint(_POOL_PER_OBJECT, (len(types),), generator=gen)
            pixels = pool[torch.arange(len(types)), pick].to(device)
            img = F.normalize(model.encode_frames(pixels.unsqueeze(1)).squeeze(1), dim=-1)
            txt = F.normalize(model.encode_text(tokens), dim=-1)
            logits = model.model.logit_scale.exp() * img @ txt.T
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o, sc in zip(opts, scheds):
                o.step()
                sc.step()
            with torch.no_grad():
                model.model.logit_scale.clamp_(max=math.log(100.0))
            losses.append(float(loss.detach()))
            bar.advance(task)

    emb.sparse = False
    model.eval()
    accuracy = _zero_shot_accuracy(model, truth, np.random.default_rng(np.random.SeedSequence([seed, 4])))
    out = checkpoint_path(root)
    save_clip(model.cpu(), out, "safetensors")
    tail = losses[-min(20, len(losses)):] if losses else [float("nan")]
    meta = {"model": TINY_CLIP, "steps": steps, "seed": seed, "lr": lr, "batch": len(types),
            "train_object_types": len(types), "final_loss": round(float(np.mean(tail)), 6),
            "zero_shot_frame_accuracy": round(accuracy, 6),
            "chance_accuracy": round(1.0 / (len(cfg["colors"]) * len(cfg["shapes"])), 6)}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out
