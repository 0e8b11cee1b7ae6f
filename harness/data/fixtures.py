"""Tiny copies of each dataset in its exact on-disk layout, with real encoded videos.

Every frame carries its own frame number as 9 horizontal bands (bit i = band i bright), so a test
can decode a frame and know which source frame it got. Each fixture holds the edge cases the
readers and the cache must survive: a corrupt video, a listed but missing video, a 29.97 fps
video, a video shorter than the preset's ``max_frames``, and the per-dataset naming traps
(ActivityNet with and without ``v_`` and mixed containers; DiDeMo's odd extensions, a name ending
in a bare dot and one ending in ``.null``). ``fixture_manifest.json`` lists which video is which.

Splits: the test split has at least 3 listed videos (2 with ``videos=6`` for DiDeMo), one of them
missing, so it keeps the 2 readable videos a run needs (``records.MIN_READABLE_VIDEOS``).

Annotated moments (``manifest["moments"]``: per video, per sentence in paragraph order, a list
of ``[start_s, end_s]``), chosen so a test can work out frame masks by hand:

- ActivityNet: sentence ``j`` has ``timestamps[j] = [2j + 1, 2j + 3]`` seconds.
- DiDeMo: sentence ``j`` has the votes ``[[a, a], [a, min(5, a + 1)], [a, a], [a, a]]`` with a
  random chunk ``a`` in 0..5, so the majority span is chunk ``a`` = ``[5a, 5a + 5)`` s; the first
  sentence of the ``long`` video instead has the tied votes ``[[0, 0], [0, 0], [2, 3], [2, 3]]``
  (two moments: ``[0, 5)`` and ``[10, 20)`` s).
"""
from __future__ import annotations

import json
import random
import string
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError

__all__ = [
    "BANDS",
    "FIXTURE_H",
    "FIXTURE_W",
    "frame_pattern",
    "make_fixture",
    "read_frame_number",
    "write_video",
]

BANDS = 9                  # bits of the frame number -> up to 511 frames per video
FIXTURE_W, FIXTURE_H = 96, 72
NTSC = Fraction(30000, 1001)

# container format and codec per extension (the file name alone decides nothing for DiDeMo's
# '.null' and bare-dot names, so the format is always given explicitly)
_FORMATS = {"mp4": ("mp4", "libx264"), "m4v": ("mp4", "libx264"), "mov": ("mov", "mpeg4"),
            "3gp": ("3gp", "mpeg4"), "avi": ("avi", "mpeg4"), "mkv": ("matroska", "mpeg4"),
            "webm": ("webm", "libvpx"), "null": ("mp4", "mpeg4"), "": ("mp4", "mpeg4")}

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
_THINGS = ["ball", "car", "dog", "person", "cat", "train", "bird", "boat"]
_ACTIONS = ["moves across the field", "jumps over a fence", "rolls down a hill", "turns around",
            "stops near the camera", "runs along the road", "appears on the screen", "waves"]


def frame_pattern(index: int, rgb: tuple[int, int, int], width: int = FIXTURE_W,
                  height: int = FIXTURE_H) -> np.ndarray:
    """An RGB frame whose horizontal bands spell ``index`` in binary (band 0 = lowest bit)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    dark = np.array(rgb, dtype=np.float32) * 0.15
    bright = np.array(rgb, dtype=np.float32) * 0.25 + 180
    edges = np.linspace(0, height, BANDS + 1).astype(int)
    for b in range(BANDS):
        img[edges[b]:edges[b + 1]] = (bright if (index >> b) & 1 else dark).astype(np.uint8)
    return img


def read_frame_number(frame_hwc: np.ndarray) -> int:
    """Inverse of ``frame_pattern`` on a decoded (not resized) frame, from the band centres."""
    height = frame_hwc.shape[0]
    edges = np.linspace(0, height, BANDS + 1)
    value = 0
    for b in range(BANDS):
        row = int((edges[b] + edges[b + 1]) / 2)
        if frame_hwc[row, :, :].astype(np.float32).mean() > 110:
            value |= 1 << b
    return value


def write_video(path: Path, n_frames: int, rate: Fraction | int, ext: str | None = None,
                rgb: tuple[int, int, int] = (200, 60, 60)) -> Path:
    """Encode ``n_frames`` numbered frames at ``rate`` fps with PyAV."""
    import av

    if n_frames >= 2 ** BANDS:
        raise ConfigError(f"write_video: at most {2 ** BANDS - 1} frames, got {n_frames}")
    ext = path.name.rsplit(".", 1)[-1].lower() if ext is None else ext
    fmt, codec = _FORMATS.get(ext, ("mp4", "mpeg4"))
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(rate)
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = FIXTURE_W, FIXTURE_H, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec == "mpeg4":
            stream.codec_context.qmax = 4
        else:
            stream.bit_rate = 400_000
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, rgb), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _caption(rng: random.Random) -> str:
    return f"a {rng.choice(_COLOURS)} {rng.choice(_THINGS)} {rng.choice(_ACTIONS)}"


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(40, 255), rng.randrange(40, 255), rng.randrange(40, 255))


def _corrupt(path: Path, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(2048)))


def make_fixture(dataset: str, out: str | Path, videos: int = 10, seed: int = 0) -> dict[str, Any]:
    """Write a tiny ``dataset`` in its on-disk layout under ``out``; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if dataset == "synthetic":
        return _synthetic(out, videos, seed)
    makers = {"msrvtt": _msrvtt, "activitynet": _activitynet, "didemo": _didemo}
    if dataset not in makers:
        raise ConfigError(f"make-fixture: unknown dataset {dataset!r}; choose one of "
                          f"{', '.join([*makers, 'synthetic'])}")
    if videos < 6:
        raise ConfigError(f"make-fixture {dataset}: --videos must be >= 6 (the edge cases need "
                          f"that many), got {videos}")
    manifest = makers[dataset](out, videos, random.Random(seed))
    manifest["dataset"] = dataset
    (out / "fixture_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _plan(ids: list[str], rng: random.Random, normal_s: tuple[int, int], fps: int
          ) -> dict[str, tuple[int, Fraction]]:
    """(frame count, rate) per video: id[0] at 29.97 fps, id[1] short (3 s), the rest normal."""
    plan = {ids[0]: (4 * 30, NTSC), ids[1]: (3 * fps, Fraction(fps))}
    for vid in ids[2:]:
        plan[vid] = (rng.randrange(normal_s[0] * fps, normal_s[1] * fps), Fraction(fps))
    return plan


def _msrvtt(out: Path, n: int, rng: random.Random) -> dict[str, Any]:
    ids = [f"video{i}" for i in range(n)]
    n_test = max(3, n // 4)
    train, test = ids[:-n_test], ids[-n_test:]
    corrupt, missing, webm = ids[2], ids[-1], ids[3]
    # normal clips 13-16 s at 5 fps: longer than the preset's 12 frames, so slicing matters
    plan = _plan(ids, rng, (13, 16), 5)
    vdir = out / "videos" / "all"   # the Frozen-in-Time zip's layout
    for vid in ids:
        if vid == missing:
            continue
        if vid == corrupt:
            _corrupt(vdir / f"{vid}.mp4", rng)
            continue
        frames, rate = plan[vid]
        write_video(vdir / f"{vid}.{'webm' if vid == webm else 'mp4'}", frames, rate, rgb=_colour(rng))
    captions = {vid: [_caption(rng) for _ in range(4)] for vid in ids}
    videos = [{"category": rng.randrange(20), "url": f"https://www.youtube.com/watch?v=fixture{i // 2}",
               "video_id": vid, "start time": 10.0 * i, "end time": 10.0 * i + plan[vid][0] / float(plan[vid][1]),
               "split": "train" if vid in train else "test", "id": i} for i, vid in enumerate(ids)]
    sentences = []
    for k in range(4):  # captions interleaved across videos, as in the official file
        for vid in ids:
            sentences.append({"caption": captions[vid][k], "video_id": vid, "sen_id": len(sentences)})
    (out / "MSRVTT_data.json").write_text(json.dumps({"info": {"year": 2016}, "videos": videos,
                                                      "sentences": sentences}))
    (out / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    (out / "MSRVTT_train.7k.csv").write_text(
        "video_id\n" + "".join(f"{v}\n" for v in train[: max(1, len(train) * 7 // 9)]))
    (out / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        + "".join(f"ret{i},msr{v[5:]},{v},{captions[v][0]}\n" for i, v in enumerate(test)))
    return {"splits": {"train9k": train, "test1kA": test}, "corrupt": [corrupt],
            "missing": [missing], "fps29.97": ids[0], "short": ids[1], "webm": webm,
            "frames": {v: plan[v][0] for v in ids}, "rates": {v: str(plan[v][1]) for v in ids},
            "captions": captions}


def _yt_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "_-") for _ in range(11))


def _activitynet(out: Path, n: int, rng: random.Random) -> dict[str, Any]:
    keys = [f"v_{_yt_id(rng)}" for _ in range(n)]
    n_val = max(3, n // 3)
    train, val = keys[:-n_val], keys[-n_val:]
    corrupt, missing = keys[2], keys[-1]
    plan = _plan(keys, rng, (6, 12), 5)
    vdir = out / "videos"
    files: dict[str, str] = {}
    for i, key in enumerate(keys):
        bare = key[2:]
        # both namings: v_<id>.mp4 (official crawlers) and <id>.mkv / <id>.webm (CLIP4Clip)
        name = f"{key}.mp4" if i % 2 == 0 else f"{bare}.{'webm' if i % 4 == 3 else 'mkv'}"
        files[key] = name
        if key == missing:
            continue
        if key == corrupt:
            _corrupt(vdir / name, rng)
            continue
        write_video(vdir / name, plan[key][0], plan[key][1], rgb=_colour(rng))
    ann: dict[str, dict[str, Any]] = {}
    paragraphs: dict[str, str] = {}
    for key in keys:
        duration = round(plan[key][0] / float(plan[key][1]) + 0.2, 2)  # a non-integer duration
        sents = [_caption(rng).capitalize() + "." for _ in range(rng.randrange(2, 4))]
        ann[key] = {"duration": duration,
                    "timestamps": [[2.0 * j + 1, 2.0 * j + 3] for j in range(len(sents))],
                    "sentences": [s if j == 0 else " " + s for j, s in enumerate(sents)]}
        paragraphs[key] = " ".join(sents)
    (out / "train.json").write_text(json.dumps({k: ann[k] for k in train}))
    (out / "val_1.json").write_text(json.dumps({k: ann[k] for k in val}))
    # train_ids.json shipped, val_ids.json not: the reader derives it from the keys
    (out / "train_ids.json").write_text(json.dumps(train))
    return {"splits": {"train": train, "val_1": val}, "corrupt": [corrupt], "missing": [missing],
            "fps29.97": keys[0], "short": keys[1], "files": files, "paragraphs": paragraphs,
            "durations": {k: ann[k]["duration"] for k in keys},
            "moments": {k: [[[2 * j + 1, 2 * j + 3]] for j in range(len(ann[k]["sentences"]))] for k in keys},
            "frames": {k: plan[k][0] for k in keys}, "rates": {k: str(plan[k][1]) for k in keys}}


def _didemo_name(rng: random.Random, ext: str) -> str:
    stem = (f"{rng.randrange(10**7, 10**8)}@N0{rng.randrange(10)}_{rng.randrange(10**9, 10**10)}_"
            f"{''.join(rng.choice('0123456789abcdef') for _ in range(10))}")
    return f"{stem}.{ext}"


def _didemo(out: Path, n: int, rng: random.Random) -> dict[str, Any]:
    exts = ["m4v", "mov", "", "null", "3gp", "mp4", "avi", "mp4"]
    names = [_didemo_name(rng, exts[i % len(exts)]) for i in range(n)]
    n_test = max(3 if n >= 7 else 2, n // 3)  # 6 videos leave no room for a third test video
    # the '.null' name belongs to train (as in the official lists), the bare-dot name to test
    bare = next(s for s in names if s.endswith("."))
    null = next(s for s in names if s.endswith(".null"))
    rest = [s for s in names if s not in (bare, null)]
    test = [bare, *rest[-(n_test - 1):]]
    train = [s for s in names if s not in test]
    corrupt = next(s for s in train if s not in (null, names[0], names[1]))
    missing = test[-1]
    plan = _plan(names, rng, (6, 12), 5)
    long_video = next(s for s in train if s not in (corrupt, names[0], names[1]))  # 35 s: the [0, 31] s window cuts it
    plan[long_video] = (35 * 2, Fraction(2))
    vdir = out / "videos"
    for name in names:
        if name == missing:
            continue
        if name == corrupt:
            _corrupt(vdir / name, rng)
            continue
        write_video(vdir / name, plan[name][0], plan[name][1], ext=name.rsplit(".", 1)[-1],
                    rgb=_colour(rng))
    extra = _didemo_name(rng, "mov")  # annotated in test_data.json but not in test_list.txt
    descs: dict[str, list[str]] = {v: [_caption(rng) + "." for _ in range(rng.randrange(2, 4))]
                                   for v in [*names, extra]}

    moments: dict[str, list[list[list[float]]]] = {}

    def annotations(videos: list[str]) -> list[dict[str, Any]]:
        rows, k = [], 0
        # interleave videos, as the real files do; the paragraph follows this JSON order
        for j in range(max(len(descs[v]) for v in videos)):
            for v in videos:
                if j < len(descs[v]):
                    a = rng.randrange(6)
                    times = [[a, a], [a, min(5, a + 1)], [a, a], [a, a]]   # majority: chunk a
                    spans = [[5.0 * a, 5.0 * a + 5]]
                    if v == long_video and j == 0:                         # a tie: both spans
                        times, spans = [[0, 0], [0, 0], [2, 3], [2, 3]], [[0.0, 5.0], [10.0, 20.0]]
                    moments.setdefault(v, []).append(spans)
                    rows.append({"annotation_id": k, "description": descs[v][j], "video": v,
                                 "times": times, "num_segments": 6,
                                 "dl_link": f"https://www.flickr.com/video_download.gne?id={k}"})
                    k += 1
        return rows

    (out / "train_data.json").write_text(json.dumps(annotations(train)))
    (out / "test_data.json").write_text(json.dumps(annotations([*test, extra])))
    (out / "train_list.txt").write_text("".join(f"{v}\n" for v in train))
    (out / "test_list.txt").write_text("".join(f"{v}\n" for v in test))
    return {"splits": {"train": train, "test": test}, "corrupt": [corrupt], "missing": [missing],
            "fps29.97": names[0], "short": names[1], "long": long_video, "unlisted": extra,
            "paragraphs": {v: " ".join(descs[v]) for v in names},
            "moments": {v: moments[v] for v in names},
            "frames": {v: plan[v][0] for v in names}, "rates": {v: str(plan[v][1]) for v in names}}


def _synthetic(out: Path, videos: int, seed: int) -> dict[str, Any]:
    from harness.synthetic import SyntheticConfig, generate_synthetic

    n_test = max(2, videos // 4) if videos else 8
    n_train = max(2, videos - n_test) if videos else 24
    cfg = SyntheticConfig(num_train=n_train, num_test=n_test, seed=seed, pretrain_clip=False)
    result = generate_synthetic(out, cfg)
    return {"dataset": "synthetic", "num_train": n_train, "num_test": n_test, "seed": seed,
            "result": str(result) if result is not None else None}
