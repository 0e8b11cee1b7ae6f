"""The frame cache: contents equal direct decoding, batches, failures counted, resume."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest_data import activitynet, didemo, msrvtt  # noqa: F401

import harness.data.frame_cache_build as fc
from harness.data import read_dataset
from harness.data.frame_cache import FrameCache, default_cache_root
from harness.data.frames import CLIP_MEAN, CLIP_STD, FrameSettings, decode_video
from harness.errors import DataError

ST = FrameSettings(max_frames=4, image_size=32)


def all_records(fixture, dataset, splits):
    return [r for s in splits for r in read_dataset(dataset, fixture[0], s)]


def test_build_counts_failures_and_matches_direct_decoding(didemo, tmp_path):  # noqa: F811
    _root, man = didemo
    recs = all_records(didemo, "didemo", ["train", "test"])
    rep = FrameCache.build(recs, ST, tmp_path, workers=1, progress=False)
    # 8 listed: 1 corrupt, 1 missing -> 6 decoded, 2 failed, nothing fatal
    assert (rep.done, rep.skipped_existing, rep.missing) == (6, 0, 1)
    assert set(rep.failed) == set(man["corrupt"]) | set(man["missing"])
    assert "unreadable" in rep.failed[man["corrupt"][0]]
    cache = FrameCache.open(tmp_path, ST, "didemo")
    assert len(cache) == 6 and set(cache.failed) == set(rep.failed)
    assert cache.path == tmp_path / "didemo" / ST.key()
    # documented size: n real frames x 3 x S x S bytes + the 128-byte .npy header per video
    n_real = sum(int(cache.get(v)[1].sum()) for v in cache.video_ids)
    assert cache.size_bytes() == n_real * 3 * 32 * 32 + 128 * 6
    assert sum(f.stat().st_size for f in (cache.path / "frames").rglob("*.npy")) == cache.size_bytes()
    assert not list(cache.path.rglob("*.tmp"))
    for r in recs:
        if r.video_id in rep.failed:
            with pytest.raises(DataError, match="not in the frame cache"):
                cache.get(r.video_id)
            continue
        frames, mask, times = cache.get(r.video_id)
        direct = decode_video(r.path, ST, r.start, r.end)
        assert np.array_equal(frames, direct.frames)
        assert np.array_equal(mask, direct.mask)
        np.testing.assert_allclose(times, direct.times, atol=1e-4)


def test_batch_normalised_and_padding_zero(msrvtt, tmp_path):  # noqa: F811
    root, _man = msrvtt
    recs = read_dataset("msrvtt", root, "train9k")
    st = FrameSettings(max_frames=12, image_size=32)
    FrameCache.build(recs, st, tmp_path, progress=False)
    cache = FrameCache.open(tmp_path, st, "msrvtt")
    ids = ["video1", "video4"]                          # 3 real frames, then 12
    pix, mask = cache.batch(ids)
    assert pix.shape == (2, 12, 3, 32, 32) and pix.dtype == torch.float32
    assert mask.tolist()[0] == [1.0] * 3 + [0.0] * 9 and mask.tolist()[1] == [1.0] * 12
    assert (pix[0, 3:] == 0).all()                      # zero *after* normalisation
    raw, _, _ = cache.get("video4")
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    expect = (torch.from_numpy(raw).float() / 255 - mean) / std
    torch.testing.assert_close(pix[1], expect, atol=1e-5, rtol=1e-5)
    u8, m8 = cache.batch_uint8(ids)
    assert u8.dtype == torch.uint8 and torch.equal(m8, mask)
    # large batches go through the reader threads; same bytes, and the cache still pickles
    many = ["video4", "video1", "video0"] * 6
    big, big_mask = cache.batch_uint8(many)
    assert torch.equal(big[1], u8[0]) and torch.equal(big_mask[1], mask[0])
    assert cache._pool is not None or cache.threads == 1
    clone = pickle.loads(pickle.dumps(cache))
    assert torch.equal(clone.batch_uint8(many)[0], big)


def test_resume_after_interruption(activitynet, tmp_path, monkeypatch):  # noqa: F811
    recs = all_records(activitynet, "activitynet", ["train", "val_1"])
    real = fc._decode_job
    calls = []

    def flaky(job):
        calls.append(job[0])
        if len(calls) == 3:
            raise KeyboardInterrupt                      # Ctrl-C during the third video
        return real(job)

    monkeypatch.setattr(fc, "_decode_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        FrameCache.build(recs, ST, tmp_path, progress=False)
    monkeypatch.setattr(fc, "_decode_job", real)
    partial = FrameCache.open(tmp_path, ST, "activitynet")
    finished = set(partial.video_ids)
    assert finished == {v for v in calls[:2] if v not in activitynet[1]["corrupt"]}
    # a crash mid-line leaves a cut JSON line; reading must ignore it
    with open(partial.path / "index.jsonl", "a") as f:
        f.write('{"id": "v_cut", "fi')
    rep = FrameCache.build(recs, ST, tmp_path, progress=False)
    assert rep.skipped_existing == len(finished)
    assert rep.done == 6 - len(finished)                 # 8 listed - corrupt - missing
    assert len(FrameCache.open(tmp_path, ST, "activitynet")) == 6
    again = FrameCache.build(recs, ST, tmp_path, progress=False)
    assert (again.done, again.skipped_existing) == (0, 6)


def test_settings_change_makes_new_cache_and_window_change_redecodes(msrvtt, tmp_path):  # noqa: F811
    recs = read_dataset("msrvtt", msrvtt[0], "test1kA")       # video5, video6 and a missing one
    FrameCache.build(recs, ST, tmp_path, progress=False)
    other = FrameSettings(max_frames=5, image_size=32)
    assert FrameCache.build(recs, other, tmp_path, progress=False).done == 2
    assert len(list((tmp_path / "msrvtt").iterdir())) == 2
    from dataclasses import replace

    moved = [replace(r, start=1.0, end=4.0) for r in recs]
    rep = FrameCache.build(moved, ST, tmp_path, progress=False)
    assert rep.done == 2 and rep.rebuilt == {"video5": "window changed", "video6": "window changed"}
    _frames, _mask, times = FrameCache.open(tmp_path, ST, "msrvtt").get("video6")
    assert times[0] == pytest.approx(1.0, abs=1e-3)


def test_open_missing_cache_and_default_root(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="eabench data cache msrvtt"):
        FrameCache.open(tmp_path, ST, "msrvtt")
    monkeypatch.delenv("EABENCH_CACHE", raising=False)
    assert default_cache_root(tmp_path) == tmp_path / ".eabench-cache"
    monkeypatch.setenv("EABENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_root(tmp_path) == tmp_path / "c"


def test_parallel_workers_same_content(msrvtt, tmp_path):  # noqa: F811
    recs = all_records(msrvtt, "msrvtt", ["train9k", "test1kA"])
    a = FrameCache.build(recs, ST, tmp_path / "a", workers=1, progress=False)
    b = FrameCache.build(recs, ST, tmp_path / "b", workers=2, progress=False)
    assert (a.done, len(a.failed)) == (b.done, len(b.failed)) == (6, 2)
    ca, cb = FrameCache.open(tmp_path / "a", ST, "msrvtt"), FrameCache.open(tmp_path / "b", ST, "msrvtt")
    for vid in ca.video_ids:
        assert np.array_equal(ca.get(vid)[0], cb.get(vid)[0])
    lines = [json.loads(x) for x in (cb.path / "failed.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == set(b.failed)


@pytest.mark.gpu
def test_batch_on_cuda_equals_cpu(msrvtt, tmp_path):  # noqa: F811
    recs = read_dataset("msrvtt", msrvtt[0], "train9k")
    st = FrameSettings(max_frames=12, image_size=32)
    FrameCache.build(recs, st, tmp_path, progress=False)
    cache = FrameCache.open(tmp_path, st, "msrvtt")
    ids = ["video1", "video4", "video0"] * 8
    cpu_pix, cpu_mask = cache.batch(ids)
    for _ in range(2):  # the second call reuses the pinned buffer
        gpu_pix, gpu_mask = cache.batch(ids, device="cuda")
        assert gpu_pix.is_cuda and gpu_mask.is_cuda
        torch.testing.assert_close(gpu_pix.cpu(), cpu_pix, atol=1e-5, rtol=1e-5)
        assert torch.equal(gpu_mask.cpu(), cpu_mask)
