"""Writing the synthetic benchmark to disk in the exact MSR-VTT layout (DATASETS.md §1.1).

``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``, ``MSRVTT_train.7k.csv``, ``MSRVTT_JSFUSION_test.csv``
(one caption per test video; test videos have distinct unordered object pairs, so every test
caption is unique and no two differ only by order), ``videos/all/videoN.mp4`` (MPEG-4 Part 2,
bit-exact flags, single thread: byte-identical for a seed) and ``synthetic_truth.json``. With
``pretrain_clip`` the tiny CLIP is then pre-trained on the train split (:mod:`.pretrain`).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from harness.synthetic.config import COLORS, SHAPES, TEMPLATES, SyntheticConfig
from harness.synthetic.pretrain import pretrain_tiny_clip
from harness.synthetic.render import object_phrase, render_distractor_frame, render_object_frame
from harness.synthetic.truth import TRUTH_FILE, relevant_seconds

__all__ = ["generate_synthetic"]


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


def generate_synthetic(out: Path, cfg: SyntheticConfig = SyntheticConfig(),  # noqa: B008 - frozen
                       progress: bool = True) -> Path:
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
        pretrain_tiny_clip(out, steps=cfg.pretrain_steps, seed=cfg.seed, progress=progress)
    return out
