"""The embedded synthetic benchmark: tiny videos whose relevant frames are known.

What it is. Every video lasts ``frames`` seconds (12, = MSR-VTT's ``max_frames``, so at 1 frame per
second the sampled frame positions are the seconds). A fraction ``1 - distractor_fraction`` of the
seconds are *relevant*: each shows one coloured object (8 colours × 4 shapes) on a neutral grey
background at a random position and size. A video holds K = 2 objects: the first half of its
relevant seconds shows object A, the second half object B, and the captions name both in that
order ("a red circle and then a blue square", five paraphrase templates). The other seconds are
*distractors* that carry no caption information and are greyscale as a class:

- ``easy``: dim grey block noise (dark, textured, no object);
- ``hard``: the same grey background as relevant frames with 2-4 greyscale clutter shapes drawn
  from the same shape vocabulary; only colour separates them from relevant frames, and the
  shapes in them are words of the captions, so a mean over frames is confused by them.

``placement="fixed"`` puts the relevant seconds in one contiguous central block in every video,
so frame *position* alone tells which frames matter; ``placement="random"`` draws the positions per
video, so a frame weighting has to follow frame *content*.

The data is written in the exact MSR-VTT layout (DATASETS.md §1.1) and read by the MSR-VTT
reader: ``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``, ``MSRVTT_train.7k.csv``,
``MSRVTT_JSFUSION_test.csv`` (one caption per test video; test videos have distinct unordered
object pairs, so every test caption is unique and no two differ only by order) and
``videos/all/videoN.mp4`` (MPEG-4 Part 2, bit-exact flags, single thread: byte-identical for a
seed). ``synthetic_truth.json`` records the config and, per video, the relevant seconds and the
objects. With ``pretrain_clip`` the tiny CLIP is pre-trained on single frames of the train split
(:mod:`harness.synthetic_clip`) and saved to ``clip/eabench-tiny.safetensors``.

What it measures: whether a head learns to weight frames by relevance (compare excitation gates /
aggregation weights with ``relevant_seconds``), whether position-based weighting suffices
(fixed) or content-based weighting is needed (random), and retrieval R@K of a tiny CLIP on CPU.
What it does not measure: anything about natural video, motion, language variety, or the absolute
numbers of the paper; a tiny CLIP at 32 px is no ViT-B/32, and rankings of variants here need not
carry over to MSR-VTT.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError

__all__ = [
    "COLORS",
    "SHAPES",
    "TEMPLATES",
    "TRUTH_FILE",
    "SyntheticConfig",
    "generate_synthetic",
    "load_truth",
    "object_phrase",
    "relevant_frames",
    "relevant_seconds",
    "render_distractor_frame",
    "render_object_frame",
]

TRUTH_FILE = "synthetic_truth.json"

# Saturated colours, far apart in hue; distractors are greyscale, so saturation separates classes.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 235), "yellow": (240, 220, 20),
    "purple": (150, 40, 210), "cyan": (20, 210, 220), "orange": (250, 140, 0), "pink": (250, 100, 200),
}
SHAPES = ("circle", "square", "triangle", "cross")
TEMPLATES = (
    "a {a} and then a {b}",
    "a {a} followed by a {b}",
    "first a {a} then a {b}",
    "a video of a {a} and a {b}",
    "a {a} appears before a {b}",
)
K_OBJECTS = 2


@dataclass(frozen=True)
class SyntheticConfig:
    num_train: int = 600
    num_test: int = 100
    frames: int = 12                      # seconds per video (1 sampled frame per second)
    distractor_fraction: float = 0.5
    placement: str = "fixed"              # "fixed" | "random"
    difficulty: str = "easy"              # "easy" | "hard"
    seed: int = 0
    width: int = 64
    height: int = 48
    fps: int = 2
    pretrain_clip: bool = True
    pretrain_steps: int = 1000            # ~45 s of one CPU core
    captions_per_video: int = field(default=len(TEMPLATES))

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"SyntheticConfig.{key}={value!r}: {allowed}")

        if self.placement not in ("fixed", "random"):
            raise bad("placement", self.placement, "use 'fixed' or 'random'")
        if self.difficulty not in ("easy", "hard"):
            raise bad("difficulty", self.difficulty, "use 'easy' or 'hard'")
        if self.num_train < 1 or self.num_test < 1:
            raise bad("num_train/num_test", (self.num_train, self.num_test), "need at least 1 each")
        max_test = math.comb(len(COLORS) * len(SHAPES), K_OBJECTS)
        if self.num_test > max_test:
            raise bad("num_test", self.num_test, f"at most {max_test} (unique object pairs)")
        if self.frames < 2:
            raise bad("frames", self.frames, "need at least 2 seconds")
        if not 0.0 <= self.distractor_fraction < 1.0:
            raise bad("distractor_fraction", self.distractor_fraction, "use a value in [0, 1)")
        if self.num_relevant < K_OBJECTS:
            raise bad("distractor_fraction", self.distractor_fraction,
                      f"leaves {self.num_relevant} relevant seconds; need at least {K_OBJECTS}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise bad("width/height", (self.width, self.height), "use even sizes of at least 32")
        if self.fps < 1:
            raise bad("fps", self.fps, "use at least 1")
        if not 1 <= self.captions_per_video <= len(TEMPLATES):
            raise bad("captions_per_video", self.captions_per_video, f"use 1..{len(TEMPLATES)}")

    @property
    def num_relevant(self) -> int:
        return round(self.frames * (1.0 - self.distractor_fraction))


# ----------------------------------------------------------------------------------------------
# drawing (also used by the CLIP pre-training, which renders frames directly)


def object_phrase(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.85
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":  # apex up, base at cy + 0.8 r
        top, bottom = cy - r, cy + 0.8 * r
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= (yy - top) * (r / (bottom - top)))
    if shape == "cross":
        t = r / 3.0
        return ((np.abs(dx) <= t) & (np.abs(dy) <= r)) | ((np.abs(dy) <= t) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _grey_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = rng.uniform(95.0, 160.0)
    noise = rng.normal(0.0, 6.0, size=(h, w, 1))
    return np.repeat(level + noise, 3, axis=2)


def _place(rng: np.random.Generator, h: int, w: int, r: float) -> tuple[float, float]:
    # keep objects inside the central square: the loader resizes the short side and centre-crops
    margin_x = (w - h) / 2.0 if w > h else 0.0
    margin_y = (h - w) / 2.0 if h > w else 0.0
    cx = rng.uniform(margin_x + r + 1, w - margin_x - r - 1)
    cy = rng.uniform(margin_y + r + 1, h - margin_y - r - 1)
    return cx, cy


def render_object_frame(rng: np.random.Generator, color: str, shape: str, width: int,
                        height: int) -> np.ndarray:
    """A relevant frame: one coloured object on a neutral grey background, uint8 [H, W, 3]."""
    img = _grey_background(rng, height, width)
    r = rng.uniform(0.22, 0.32) * min(width, height)
    cx, cy = _place(rng, height, width, r)
    rgb = np.clip(np.asarray(COLORS[color], np.float32) + rng.uniform(-15, 15, size=3), 0, 255)
    img[_shape_mask(shape, height, width, cx, cy, r)] = rgb
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_distractor_frame(rng: np.random.Generator, difficulty: str, width: int,
                            height: int) -> np.ndarray:
    """A distractor frame (greyscale): dim block noise (easy) or grey clutter shapes (hard)."""
    if difficulty == "easy":
        blocks = rng.uniform(5.0, 55.0, size=(math.ceil(height / 4), math.ceil(width / 4)))
        grey = np.kron(blocks, np.ones((4, 4)))[:height, :width]
        img = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        img = _grey_background(rng, height, width)
        for _ in range(int(rng.integers(2, 5))):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            r = rng.uniform(0.12, 0.22) * min(width, height)
            cx, cy = _place(rng, height, width, r)
            img[_shape_mask(shape, height, width, cx, cy, r)] = rng.choice([rng.uniform(20, 70),
                                                                            rng.uniform(190, 245)])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def relevant_seconds(rng: np.random.Generator, cfg: SyntheticConfig) -> list[bool]:
    n, k = cfg.frames, cfg.num_relevant
    if cfg.placement == "fixed":
        start = (n - k) // 2
        chosen = set(range(start, start + k))
    else:
        chosen = {int(i) for i in rng.choice(n, size=k, replace=False)}
    return [i in chosen for i in range(n)]


def relevant_frames(relevant_secs: list[bool], max_frames: int) -> list[bool]:
    """Map per-second truth to the T = ``max_frames`` sampled frame positions (1 frame per second,
    CLIP4Clip ``slice_framepos=2``: ``linspace(0, n-1, T).astype(int)`` when n > T, else the n
    seconds followed by padding, which is never relevant)."""
    n = len(relevant_secs)
    if n > max_frames:
        idx = np.linspace(0, n - 1, max_frames).astype(int)
        return [bool(relevant_secs[i]) for i in idx]
    return [bool(r) for r in relevant_secs] + [False] * (max_frames - n)


def load_truth(root: Path) -> dict[str, Any]:
    """``synthetic_truth.json`` under ``root``: {"config": {...}, "videos": {video_id: {...}}}."""
    path = Path(root) / TRUTH_FILE
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
        truth["config"], truth["videos"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        from harness.errors import DataError

        raise DataError(f"{path}: not a synthetic ground-truth file ({type(exc).__name__}: {exc}); "
                        f"regenerate it with `eabench data synthetic`") from exc
    return truth


# ----------------------------------------------------------------------------------------------
# generation


def _objects() -> list[tuple[str, str]]:
    return [(c, s) for c in COLORS for s in SHAPES]


def _plan(cfg: SyntheticConfig) -> list[dict[str, Any]]:
    """Per video: id, split, objects (ordered pair), captions, relevant seconds."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    objs = _objects()
    # test: distinct unordered pairs (unique captions, no order-only near-duplicates)
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))]
    test_pairs = [pairs[int(p)] for p in rng.choice(len(pairs), size=cfg.num_test, replace=False)]
    plan: list[dict[str, Any]] = []
    total = cfg.num_train + cfg.num_test
    for idx in range(total):
        vrng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, idx]))
        if idx < cfg.num_train:
            a, b = (int(x) for x in vrng.choice(len(objs), size=2, replace=False))
            split = "train"
        else:
            a, b = test_pairs[idx - cfg.num_train]
            if vrng.random() < 0.5:
                a, b = b, a
            split = "test"
        pa, pb = object_phrase(*objs[a]), object_phrase(*objs[b])
        captions = [t.format(a=pa, b=pb) for t in TEMPLATES]
        if split == "test":  # one caption, the one the JSFusion CSV holds, first
            first = int(vrng.integers(len(TEMPLATES)))
            captions = [captions[first]] + [c for i, c in enumerate(captions) if i != first]
        captions = captions[: cfg.captions_per_video]
        plan.append({"video_id": f"video{idx}", "id": idx, "split": split,
                     "objects": [objs[a], objs[b]], "captions": captions,
                     "relevant": relevant_seconds(vrng, cfg), "seed": [cfg.seed, 2, idx]})
    return plan


def _video_frames(item: dict[str, Any], cfg: SyntheticConfig) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    rng = np.random.default_rng(np.random.SeedSequence(item["seed"]))
    rel_idx = [i for i, r in enumerate(item["relevant"]) if r]
    half = math.ceil(len(rel_idx) / 2)
    shown = {s: (0 if n < half else 1) for n, s in enumerate(rel_idx)}
    frames = []
    for sec in range(cfg.frames):
        if sec in shown:
            color, shape = item["objects"][shown[sec]]
            frames.append(render_object_frame(rng, color, shape, cfg.width, cfg.height))
        else:
            frames.append(render_distractor_frame(rng, cfg.difficulty, cfg.width, cfg.height))
    objects = [{"name": object_phrase(c, s), "color": c, "shape": s,
                "seconds": [sec for sec, o in sorted(shown.items()) if o == k]}
               for k, (c, s) in enumerate(item["objects"])]
    return frames, objects


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av

    # bitexact + one thread: the same frames give the same bytes on every run
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000  # tiny frames: this pins the quantiser near its best (qmin)
        stream.codec_context.options = {"flags": "+bitexact", "threads": "1"}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for _ in range(fps):  # every frame of a second shows the same picture
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate_synthetic(out: Path, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> Path:
    """Write the benchmark under ``out`` (MSR-VTT layout) and return ``out``."""
    out = Path(out)
    video_dir = out / "videos" / "all"
    video_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(cfg)

    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    truth_videos: dict[str, Any] = {}
    with Progress(console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("synthetic videos", total=len(plan))
        for item in plan:
            frames, objects = _video_frames(item, cfg)
            _write_video(video_dir / f"{item['video_id']}.mp4", frames, cfg.fps)
            truth_videos[item["video_id"]] = {"split": item["split"], "relevant_seconds": item["relevant"],
                                              "objects": objects}
            bar.advance(task)

    videos = [{"category": 0, "url": f"https://www.youtube.com/watch?v=synth{p['id']:06d}",
               "video_id": p["video_id"], "start time": 0.0, "end time": float(cfg.frames),
               "split": p["split"], "id": p["id"]} for p in plan]
    sentences = []
    for p in plan:
        for caption in p["captions"]:
            sentences.append({"caption": caption, "video_id": p["video_id"], "sen_id": len(sentences)})
    data = {"info": {"description": "EA-Bench synthetic benchmark", "config": asdict(cfg)},
            "videos": videos, "sentences": sentences}
    (out / "MSRVTT_data.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    train = [p for p in plan if p["split"] == "train"]
    test = [p for p in plan if p["split"] == "test"]
    _write_csv(out / "MSRVTT_train.9k.csv", ["video_id"], [[p["video_id"]] for p in train])
    n7k = max(1, round(len(train) * 7010 / 9000))  # 7k is a subset of 9k, as in MSR-VTT
    _write_csv(out / "MSRVTT_train.7k.csv", ["video_id"], [[p["video_id"]] for p in train[:n7k]])
    _write_csv(out / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
               [[f"ret{i}", f"msr{p['id']}", p["video_id"], p["captions"][0]] for i, p in enumerate(test)])

    truth = {"config": {**asdict(cfg), "num_relevant": cfg.num_relevant, "colors": list(COLORS),
                        "shapes": list(SHAPES), "templates": list(TEMPLATES)},
             "videos": truth_videos}
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")

    if cfg.pretrain_clip:
        from harness.synthetic_clip import pretrain_tiny_clip

        pretrain_tiny_clip(out, steps=cfg.pretrain_steps, seed=cfg.seed, progress=progress)
    return out
