"""Bad input to the data layer (issue 11): each test feeds one fault and checks its outcome.

Outcomes are the project's rules: a clear error that names the file, the field and the fix
(before any compute), a counted skip, or a rebuild. docs/FAULTS.md ("Data") lists them.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest_data import activitynet, build_in_child, copy_root, didemo, msrvtt  # noqa: F401

import harness.data.frame_cache_build as fcb
import harness.data.frames as frames_mod
from harness.cli import main
from harness.data import read_dataset
from harness.data.fixtures import read_frame_number, write_video
from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings, decode_video, settings_for
from harness.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
ST = FrameSettings(max_frames=4, image_size=16)


def _records(root: Path, dataset: str, splits: tuple[str, ...]) -> list:
    return [r for s in splits for r in read_dataset(dataset, root, s)]


def _index_lines(cache: Path, dataset: str, st: FrameSettings = ST) -> list[dict]:
    text = (cache / dataset / st.key() / "index.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


# ------------------------------------------------------------ 3: stale / damaged cache entries
def test_changed_source_video_is_rebuilt(msrvtt, tmp_path):  # noqa: F811
    root = copy_root(msrvtt[0], tmp_path / "m")
    rec = next(r for r in _records(root, "msrvtt", ("test1kA",)) if r.path is not None)
    recs = [rec]
    cache_root = tmp_path / "cache"
    first = FrameCache.build(recs, ST, cache_root, progress=False)
    assert first.done == 1 and rec.video_id in FrameCache.open(cache_root, ST, "msrvtt")
    # the dataset is regenerated into the same folder: 10 frames at 5 fps = 2 s, so the
    # 1 fps grid t = 0, 1 picks source frames 0 and 5
    write_video(rec.path, 10, 5, rgb=(10, 200, 10))
    os.utime(rec.path, ns=(rec.path.stat().st_atime_ns, rec.path.stat().st_mtime_ns + 10**9))
    assert rec.video_id not in FrameCache.open(cache_root, ST, "msrvtt")   # stale = not cached
    again = FrameCache.build(recs, ST, cache_root, progress=False)
    assert again.done == 1 and again.skipped_existing == 0
    assert list(again.rebuilt) == [rec.video_id] and "source changed" in again.rebuilt[rec.video_id]
    assert again.to_dict()["rebuilt"] == 1
    _frames, mask, times = FrameCache.open(cache_root, ST, "msrvtt").get(rec.video_id)
    assert mask.tolist() == [True, True, False, False]
    assert times[:2].tolist() == pytest.approx([0.0, 1.0], abs=1e-3)
    st72 = FrameSettings(max_frames=4, image_size=72)
    assert [read_frame_number(f.transpose(1, 2, 0)) for f in decode_video(rec.path, st72).frames[:2]] == [0, 5]


def test_damaged_frame_file_is_not_cached_and_rebuilt(msrvtt, tmp_path, capsys):  # noqa: F811
    root = msrvtt[0]
    recs = _records(root, "msrvtt", ("train9k",))
    cache_root = tmp_path / "cache"
    FrameCache.build(recs, ST, cache_root, progress=False)
    cache = FrameCache.open(cache_root, ST, "msrvtt")
    ok = sorted(cache.video_ids)
    cut, gone = ok[0], ok[1]
    lines = {e["id"]: e for e in _index_lines(cache_root, "msrvtt")}
    cut_file = cache.path / "frames" / lines[cut]["file"]
    size = cut_file.stat().st_size
    with cut_file.open("r+b") as f:
        f.truncate(size - 100)                     # a disk-full write, a copy cut short
    (cache.path / "frames" / lines[gone]["file"]).unlink()
    reopened = FrameCache.open(cache_root, ST, "msrvtt")
    assert cut not in reopened and gone not in reopened     # training rebuilds instead of failing
    assert set(reopened.video_ids) == set(ok) - {cut, gone}
    assert "damaged" in reopened.stale[cut] and "missing" in reopened.stale[gone]

    rc = main(["data", "cache", "msrvtt", "--root", str(root), "--split", "train9k", "--workers", "1",
               "--max-frames", "4", "--image-size", "16", "--cache-root", str(cache_root),
               "--no-progress", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["rebuilt"] == 2 and rep["done"] == 2
    assert set(rep["rebuilt_videos"]) == {cut, gone}
    assert rep["rebuilt_reasons"] == {"frame file damaged": 1, "frame file missing": 1}
    fixed = FrameCache.open(cache_root, ST, "msrvtt")
    assert set(fixed.video_ids) == set(ok)
    rec = next(r for r in recs if r.video_id == cut)
    assert np.array_equal(fixed.get(cut)[0], decode_video(rec.path, ST).frames)
    # text output says it too; a third run has nothing left to rebuild
    with cut_file.open("r+b") as f:
        f.truncate(size - 1)
    rc = main(["data", "cache", "msrvtt", "--root", str(root), "--split", "train9k", "--workers", "1",
               "--max-frames", "4", "--image-size", "16", "--cache-root", str(cache_root), "--no-progress"])
    out = capsys.readouterr().out  # the build's summary is the command's output
    assert rc == 0 and "rebuilt 1 stale" in out and "frame file damaged" in out


def test_older_index_lines_stay_readable(msrvtt, tmp_path):  # noqa: F811
    root = copy_root(msrvtt[0], tmp_path / "m")
    rec = next(r for r in _records(root, "msrvtt", ("test1kA",)) if r.path is not None)
    recs = [rec]
    cache_root = tmp_path / "cache"
    FrameCache.build(recs, ST, cache_root, progress=False)
    index = cache_root / "msrvtt" / ST.key() / "index.jsonl"
    old = [{k: v for k, v in e.items() if not k.startswith("src_")} for e in _index_lines(cache_root, "msrvtt")]
    index.write_text("".join(json.dumps(e) + "\n" for e in old))   # as an older build wrote it
    assert rec.video_id in FrameCache.open(cache_root, ST, "msrvtt")
    assert FrameCache.build(recs, ST, cache_root, progress=False).skipped_existing == 1
    # a source touched after its frames were written is stale even without the source key
    frame_mtime = (index.parent / "frames" / old[0]["file"]).stat().st_mtime_ns
    os.utime(rec.path, ns=(frame_mtime, frame_mtime + 5 * 10**9))
    assert rec.video_id not in FrameCache.open(cache_root, ST, "msrvtt")
    rep = FrameCache.build(recs, ST, cache_root, progress=False)
    assert rep.done == 1 and "source" in rep.rebuilt[rec.video_id]


# ------------------------------------------------------------ 8: two builders, one cache
def test_concurrent_builders_decode_each_video_once(msrvtt, tmp_path):  # noqa: F811
    root, man = msrvtt
    recs = _records(root, "msrvtt", ("train9k", "test1kA"))
    decodable = {r.video_id for r in recs if r.path is not None} - set(man["corrupt"])
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    args = (str(root), "msrvtt", ("train9k", "test1kA"), str(tmp_path), ST, 0.25, barrier, queue)
    procs = [ctx.Process(target=build_in_child, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ids = [e["id"] for e in _index_lines(tmp_path, "msrvtt")]
    assert sorted(ids) == sorted(decodable)                      # one line per video
    assert sum(r["done"] for r in reports) == len(decodable)     # each decoded once
    for r in reports:                                            # both end with the whole picture
        assert r["done"] + r["skipped_existing"] == len(decodable)
        assert set(r["failures"]) == set(man["corrupt"]) | set(man["missing"])
    failed = [json.loads(x)["id"] for x in (tmp_path / "msrvtt" / ST.key() / "failed.jsonl").read_text().splitlines()]
    assert sorted(failed) == sorted(set(man["corrupt"]) | set(man["missing"]))


# ------------------------------------------------------------ 9: memory and dead workers
def test_decode_holds_at_most_one_full_size_frame(tmp_path, monkeypatch):
    big = tmp_path / "big.mp4"
    import av

    w, h, n = 1024, 768, 12
    with av.open(str(big), "w") as out:                  # 12 s at 1 fps: 12 samples
        s = out.add_stream("libx264", rate=1)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"preset": "ultrafast"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 1)
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    real = frames_mod._iter_samples
    alive_max = [0]
    refs: list[weakref.ref] = []

    def watched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for rgb, t in real(*args, **kwargs):
            assert rgb.shape == (h, w, 3)
            alive_max[0] = max(alive_max[0], sum(r() is not None and r() is not rgb for r in refs))
            refs.append(weakref.ref(rgb))
            yield rgb, t

    monkeypatch.setattr(frames_mod, "_iter_samples", watched)
    clip = decode_video(big, FrameSettings(max_frames=12, image_size=32))
    assert len(refs) == n and clip.mask.all() and clip.frames.shape == (12, 3, 32, 32)
    # while frame k arrives, at most frame k-1 (being resized) may still be alive: 2 full frames
    assert alive_max[0] <= 1
    assert [int(f.mean() + 0.5) for f in clip.frames[[0, 5, 11]]] == pytest.approx([0, 100, 220], abs=3)


VICTIM = "video4"
_REAL_DECODE = fcb._decode_job


def _oom_killed_on_victim(job):  # noqa: ANN001, ANN202
    """What the kernel's OOM killer does to the worker that decodes VICTIM."""
    if job[0] == VICTIM:
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_DECODE(job)


def test_worker_killed_by_signal_fails_only_its_video(msrvtt, tmp_path, monkeypatch):  # noqa: F811
    root, man = msrvtt
    recs = _records(root, "msrvtt", ("train9k", "test1kA"))
    victim = VICTIM
    assert victim not in man["corrupt"] + man["missing"]
    real = fcb._decode_job
    monkeypatch.setattr(fcb, "_decode_job", _oom_killed_on_victim)
    rep = FrameCache.build(recs, ST, tmp_path, workers=2, progress=False)
    decodable = {r.video_id for r in recs if r.path is not None} - set(man["corrupt"])
    assert rep.done == len(decodable) - 1
    assert "SIGKILL" in rep.failed[victim] and "worker" in rep.failed[victim]
    lines = [json.loads(x) for x in (tmp_path / "msrvtt" / ST.key() / "failed.jsonl").read_text().split("\n") if x]
    assert [x["reason"] for x in lines if x["id"] == victim] == [rep.failed[victim]]
    cache = FrameCache.open(tmp_path, ST, "msrvtt")
    assert set(cache.video_ids) == decodable - {victim} and victim in cache.failed
    monkeypatch.setattr(fcb, "_decode_job", real)                 # memory freed: the retry works
    assert FrameCache.build(recs, ST, tmp_path, workers=2, progress=False).done == 1


# ------------------------------------------------------------ 10: numeric settings
@pytest.mark.parametrize("flags,flag", [
    (["--max-frames", "0"], "--max-frames"),
    (["--max-frames", "-2"], "--max-frames"),
    (["--fps", "0"], "--fps"),
    (["--fps", "-1"], "--fps"),
    (["--fps", "nan"], "--fps"),
    (["--fps", "inf"], "--fps"),
    (["--image-size", "0"], "--image-size"),
    (["--workers", "0"], "--workers"),
])
def test_numeric_settings_rejected_before_compute(msrvtt, tmp_path, capsys, flags, flag):  # noqa: F811
    rc = main(["data", "cache", "msrvtt", "--root", str(msrvtt[0]), "--cache-root", str(tmp_path / "c"),
               "--no-progress", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and "error" in err
    assert not (tmp_path / "c").exists()                          # nothing decoded


def test_settings_for_keeps_explicit_values():
    with pytest.raises(ConfigError, match="max_frames"):
        settings_for("msrvtt", max_frames=0)
    with pytest.raises(ConfigError, match="fps"):
        settings_for("msrvtt", fps=0.0)
    with pytest.raises(ConfigError, match="fps"):
        FrameSettings(max_frames=4, fps=float("nan"))
    with pytest.raises(ConfigError, match="image_size"):
        settings_for("msrvtt", image_size=0)
    with pytest.raises(ConfigError, match="workers"):
        FrameCache.build([], ST, "/nonexistent", workers=0, dataset="msrvtt", progress=False)
    assert settings_for("msrvtt", fps=0.5).fps == 0.5


def test_check_workers_rejected(msrvtt, capsys):  # noqa: F811
    assert main(["data", "check", "msrvtt", "--root", str(msrvtt[0]), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


# ------------------------------------------------------------ 11: encodings
LATIN1_CSV = b"key,vid_key,video_id,sentence\nret0,msr6,video6,caf\xe9 au lait\n"   # 0xe9 at 30 + 20
BAD_JSON = b'{"x": "\xff"}'                                                        # 0xff at 7


@pytest.mark.parametrize("dataset,split,fname,payload,where", [
    ("msrvtt", "test1kA", "MSRVTT_JSFUSION_test.csv", LATIN1_CSV, "byte 0xe9 at offset 50"),
    ("msrvtt", "train9k", "MSRVTT_train.9k.csv", b"video_id\nvid\xc3o0\n", "byte 0xc3 at offset 12"),
    ("msrvtt", "train9k", "MSRVTT_data.json", BAD_JSON, "byte 0xff at offset 7"),
    ("activitynet", "val_1", "val_1.json", BAD_JSON, "byte 0xff at offset 7"),
    ("activitynet", "train", "train_ids.json", BAD_JSON, "byte 0xff at offset 7"),
    ("didemo", "test", "test_data.json", BAD_JSON, "byte 0xff at offset 7"),
    ("didemo", "test", "test_list.txt", b"a.mp4\nb\xfe.mov\n", "byte 0xfe at offset 7"),
    ("didemo", "test", "test_list.txt", b"\xef\xbb\xbfa.mp4\nb\xfe.mov\n", "byte 0xfe at offset 10"),  # 3-byte BOM
])
def test_non_utf8_annotation_names_file_and_byte(request, tmp_path, dataset, split, fname, payload, where):
    root = copy_root(request.getfixturevalue(dataset)[0], tmp_path / dataset)
    (root / fname).write_bytes(payload)
    with pytest.raises(DataError) as exc:
        read_dataset(dataset, root, split, require_videos=False)
    msg = str(exc.value)
    assert str(root / fname) in msg and "not UTF-8" in msg and where in msg
    assert "re-save it as UTF-8" in msg


def test_utf8_bom_accepted(msrvtt, activitynet, didemo, tmp_path):  # noqa: F811
    bom = b"\xef\xbb\xbf"
    m = copy_root(msrvtt[0], tmp_path / "m")
    for name in ("MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv", "MSRVTT_data.json"):
        (m / name).write_bytes(bom + (msrvtt[0] / name).read_bytes())
    assert [r.video_id for r in read_dataset("msrvtt", m, "test1kA")] == msrvtt[1]["splits"]["test1kA"]
    assert [r.video_id for r in read_dataset("msrvtt", m, "train9k")] == msrvtt[1]["splits"]["train9k"]
    a = copy_root(activitynet[0], tmp_path / "a")
    for name in ("val_1.json", "train.json", "train_ids.json"):
        (a / name).write_bytes(bom + (activitynet[0] / name).read_bytes())
    assert [r.video_id for r in read_dataset("activitynet", a, "train")] == activitynet[1]["splits"]["train"]
    d = copy_root(didemo[0], tmp_path / "d")
    for name in ("test_data.json", "test_list.txt"):
        (d / name).write_bytes(bom + (didemo[0] / name).read_bytes())
    assert [r.video_id for r in read_dataset("didemo", d, "test")] == didemo[1]["splits"]["test"]


# ------------------------------------------------------------ 12: Rich markup in data
def test_markup_in_video_ids_is_printed_literally(msrvtt, tmp_path, capsys):  # noqa: F811
    root = copy_root(msrvtt[0], tmp_path / "m")
    odd = "clip[/bold]x"
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr6,video6,a [red]cat[/red]\nret1,msr9,clip[/bold]x,a dog\n")
    assert main(["data", "check", "msrvtt", "--root", str(root), "--no-probe"]) in (0, 1)
    out = capsys.readouterr().out
    assert odd in out
    rc = main(["data", "cache", "msrvtt", "--root", str(root), "--split", "test1kA", "--max-frames", "2",
               "--image-size", "16", "--cache-root", str(tmp_path / "c"), "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and f"failed {odd}: missing" in out


# ------------------------------------------------------------ 13: symlink loops
def test_symlink_loop_under_videos_does_not_hang(tmp_path):
    root = tmp_path / "m"
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "sub" / "video0.mp4").write_bytes(b"x")
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    (elsewhere / "video1.mp4").write_bytes(b"y")
    os.symlink(".", videos / "loop_a")                     # three ways back into the same folders
    os.symlink(".", videos / "loop_b")
    os.symlink("..", videos / "sub" / "up")
    os.symlink(elsewhere, videos / "linked")               # a real link to elsewhere: still followed
    code = ("import json, sys; from pathlib import Path; "
            "from harness.data.lookup import VideoIndex, search_dirs; "
            "ix = VideoIndex(search_dirs(Path(sys.argv[1]), None)); "
            "print(json.dumps({k: len(v) for k, v in ix.by_name.items()}))")
    res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"video0.mp4": 1, "video1.mp4": 1}


# ------------------------------------------------------------ 14: check uses training's minimums
def test_check_verdict_uses_training_minimums(msrvtt, tmp_path):  # noqa: F811
    from harness.data.check import check_dataset
    from harness.data.records import MIN_READABLE_VIDEOS

    assert MIN_READABLE_VIDEOS == {"train": 1, "test": 2}
    root = copy_root(msrvtt[0], tmp_path / "m")
    cap = "key,vid_key,video_id,sentence\n"
    (root / "MSRVTT_JSFUSION_test.csv").write_text(cap + "ret0,msr0,video0,a\nret1,msr9,video99,b\n")
    res = check_dataset("msrvtt", root)                     # one readable test video, one missing
    assert res["verdict"] == "unusable"
    assert any("test1kA" in r and "1 readable" in r and "at least 2" in r for r in res["reasons"])
    (root / "MSRVTT_JSFUSION_test.csv").write_text(cap + "ret0,msr0,video0,a\nret1,msr1,video1,b\n")
    assert check_dataset("msrvtt", root)["verdict"] != "unusable"
