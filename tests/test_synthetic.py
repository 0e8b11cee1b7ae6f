"""harness.synthetic: the embedded benchmark (rendering, the dataset, the tiny CLIP pre-training).

Files are parsed with the stdlib (json, csv) and PyAV here, not with the project's readers.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from harness.synthetic import COLORS, SyntheticConfig, generate_synthetic
from harness.errors import ConfigError

SMALL: dict = {"num_train": 12, "num_test": 6, "pretrain_clip": False}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _saturation(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.int32)
    return x.max(axis=2) - x.min(axis=2)


@pytest.fixture(scope="module")
def easy_fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("easy_fixed"), SyntheticConfig(**SMALL), progress=False)


def test_byte_identical_for_a_seed(tmp_path: Path, easy_fixed: Path) -> None:
    again = generate_synthetic(tmp_path / "again", SyntheticConfig(**SMALL), progress=False)
    first, second = _hashes(easy_fixed), _hashes(again)
    assert len(first) == 4 + 1 + 18  # 3 csv + data json + truth + 18 videos
    assert first == second
    other = _hashes(generate_synthetic(tmp_path / "seed1", SyntheticConfig(**SMALL, seed=1), progress=False))
    assert other.keys() == first.keys()
    assert other["MSRVTT_data.json"] != first["MSRVTT_data.json"]
    assert other["videos/all/video0.mp4"] != first["videos/all/video0.mp4"]


def test_msrvtt_layout(easy_fixed: Path) -> None:
    data = json.loads((easy_fixed / "MSRVTT_data.json").read_text())
    assert {"videos", "sentences"} <= set(data)
    assert len(data["videos"]) == 18
    for v in data["videos"]:
        assert set(v) == {"category", "url", "video_id", "start time", "end time", "split", "id"}
        assert v["video_id"] == f"video{v['id']}" and v["url"].startswith("https://www.youtube.com/watch?v=")
        assert (v["start time"], v["end time"]) == (0.0, 12.0)
        assert (easy_fixed / "videos" / "all" / f"{v['video_id']}.mp4").is_file()
    assert len({v["url"] for v in data["videos"]}) == 18
    sents = data["sentences"]
    assert all(set(s) == {"caption", "video_id", "sen_id"} for s in sents)
    assert [s["sen_id"] for s in sents] == list(range(len(sents)))
    captions: dict[str, list[str]] = {}
    for s in sents:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    assert all(len(c) == 5 and len(set(c)) == 5 for c in captions.values())

    head9, rows9 = _read_csv(easy_fixed / "MSRVTT_train.9k.csv")
    head7, rows7 = _read_csv(easy_fixed / "MSRVTT_train.7k.csv")
    assert head9 == head7 == ["video_id"]
    train = [r[0] for r in rows9]
    assert train == [f"video{i}" for i in range(12)]
    assert [r[0] for r in rows7] == train[:9]  # round(12 * 7010 / 9000) = 9, a subset of 9k

    head, rows = _read_csv(easy_fixed / "MSRVTT_JSFUSION_test.csv")
    assert head == ["key", "vid_key", "video_id", "sentence"]
    assert [r[0] for r in rows] == [f"ret{i}" for i in range(6)]
    assert [r[2] for r in rows] == [f"video{i}" for i in range(12, 18)]
    assert all(r[1] == "msr" + r[2][len("video"):] for r in rows)
    assert all(r[3] in captions[r[2]] for r in rows)
    assert len({r[3] for r in rows}) == 6
    # no two test videos show the same pair of objects (in either order)
    truth = json.loads((easy_fixed / "synthetic_truth.json").read_text())
    pairs = {frozenset(o["name"] for o in truth["videos"][r[2]]["objects"]) for r in rows}
    assert len(pairs) == 6


def test_truth_fixed_placement(easy_fixed: Path) -> None:
    truth = json.loads((easy_fixed / "synthetic_truth.json").read_text())
    assert truth["config"]["placement"] == "fixed" and truth["config"]["distractor_fraction"] == 0.5
    data = json.loads((easy_fixed / "MSRVTT_data.json").read_text())
    first_caption = {}
    for s in data["sentences"]:
        first_caption.setdefault(s["video_id"], s["caption"])
    expected = [3 <= i <= 8 for i in range(12)]  # 6 of 12 seconds, the central block
    assert set(truth["videos"]) == {f"video{i}" for i in range(18)}
    for vid, v in truth["videos"].items():
        assert v["relevant_seconds"] == expected
        a, b = v["objects"]
        assert a["seconds"] == [3, 4, 5] and b["seconds"] == [6, 7, 8]
        assert a["name"] == f"{a['color']} {a['shape']}"
        cap = first_caption[vid]
        assert a["name"] in cap and b["name"] in cap
        assert cap.index(a["name"]) < cap.index(b["name"])


@pytest.mark.parametrize("fraction,relevant", [(0.25, 9), (0.5, 6), (0.75, 3)])
def test_truth_random_placement(tmp_path: Path, fraction: float, relevant: int) -> None:
    cfg = SyntheticConfig(**SMALL, placement="random", distractor_fraction=fraction)
    truth = json.loads((generate_synthetic(tmp_path, cfg, progress=False) / "synthetic_truth.json").read_text())
    patterns = set()
    for v in truth["videos"].values():
        rel = v["relevant_seconds"]
        assert len(rel) == 12 and sum(rel) == relevant
        shown = sorted(v["objects"][0]["seconds"] + v["objects"][1]["seconds"])
        assert shown == [i for i, r in enumerate(rel) if r]
        assert max(v["objects"][0]["seconds"]) < min(v["objects"][1]["seconds"])
        patterns.add(tuple(rel))
    assert len(patterns) > 1  # positions vary from video to video


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_decoded_frames_follow_the_design(tmp_path: Path, difficulty: str) -> None:
    cfg = SyntheticConfig(num_train=4, num_test=2, pretrain_clip=False, placement="random",
                          difficulty=difficulty)
    root = generate_synthetic(tmp_path, cfg, progress=False)
    truth = json.loads((root / "synthetic_truth.json").read_text())
    for vid, v in truth["videos"].items():
        frames = _decode(root / "videos" / "all" / f"{vid}.mp4")
        assert len(frames) == 24 and frames[0].shape == (48, 64, 3)  # 12 s at 2 fps, 64x48
        colour_of = {s: o["color"] for o in v["objects"] for s in o["seconds"]}
        for sec, rel in enumerate(v["relevant_seconds"]):
            img = frames[2 * sec]  # the first frame of each second, as CLIP4Clip samples
            sat = _saturation(img)
            if rel:
                assert sat.max() > 100, (vid, sec)
                # the most saturated pixels carry the named colour
                ys, xs = np.nonzero(sat >= np.percentile(sat, 99))
                mean_rgb = img[ys, xs].astype(float).mean(axis=0)
                assert np.abs(mean_rgb - np.array(COLORS[colour_of[sec]])).max() < 60, (vid, sec, mean_rgb)
            else:
                assert sat.max() < 45, (vid, sec)  # greyscale up to codec chroma noise
                if difficulty == "easy":
                    assert img.mean() < 70  # dim noise
                else:
                    assert img.mean() > 70  # same grey world as relevant frames
        rel_means = [frames[2 * s].mean() for s, r in enumerate(v["relevant_seconds"]) if r]
        assert min(rel_means) > 70


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="placement"):
        SyntheticConfig(placement="middle")
    with pytest.raises(ConfigError, match="difficulty"):
        SyntheticConfig(difficulty="medium")
    with pytest.raises(ConfigError, match="num_test"):
        SyntheticConfig(num_test=497)  # C(32, 2) = 496 distinct object pairs
    with pytest.raises(ConfigError, match="distractor_fraction"):
        SyntheticConfig(distractor_fraction=0.95)  # round(12 * 0.05) = 1 relevant second < 2 objects


def test_short_pretrain_writes_a_loadable_deterministic_clip(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("EABENCH_CACHE_DIR", str(tmp_path / "cache"))  # sha256 cache off $HOME

    from harness.backbone import TINY_CLIP, load_clip
    from harness.synthetic import pretrain_tiny_clip

    cfg = SyntheticConfig(num_train=24, num_test=8, pretrain_clip=True, pretrain_steps=4)
    root = generate_synthetic(tmp_path / "a", cfg, progress=False)
    ckpt = root / "clip" / "eabench-tiny.safetensors"
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert (meta["steps"], meta["seed"], meta["model"]) == (4, 0, TINY_CLIP)
    assert np.isfinite(meta["final_loss"]) and 0.0 <= meta["zero_shot_frame_accuracy"] <= 1.0
    clip = load_clip(TINY_CLIP, ckpt)
    assert clip.weights_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    torch.manual_seed(0)
    fresh = load_clip(TINY_CLIP)  # the same seeded random init, before pre-training
    assert not torch.equal(clip.model.visual.proj, fresh.model.visual.proj)
    # same seed → same bytes (rerun the pre-training alone on the same data)
    again = pretrain_tiny_clip(root, steps=4, seed=0)
    assert again == ckpt
    assert hashlib.sha256(again.read_bytes()).hexdigest() == clip.weights_sha256


def test_relevant_frames_follow_clip4clip_sampling() -> None:
    from harness.synthetic import relevant_frames

    secs = [False, False, False, True, True, True, True, True, True, False, False, False]
    assert relevant_frames(secs, 12) == secs
    assert relevant_frames(secs, 14) == secs + [False, False]  # padding is never relevant
    # T=4: linspace(0, 11, 4) = 0, 3.67, 7.33, 11 -> int 0, 3, 7, 11
    assert relevant_frames(secs, 4) == [False, True, True, False]


def test_load_truth_errors_name_the_file(tmp_path: Path) -> None:
    from harness.synthetic import load_truth
    from harness.errors import DataError

    (tmp_path / "synthetic_truth.json").write_text('{"videos": {}}')
    with pytest.raises(DataError, match="synthetic_truth.json"):
        load_truth(tmp_path)
