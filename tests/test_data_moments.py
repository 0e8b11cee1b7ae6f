"""Annotated moments: read from the official formats, mapped onto sampled frames by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest_data import activitynet, copy_root, didemo, rewrite_json  # noqa: F401

from harness.data import read_dataset
from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings
from harness.data.moments import (
    chunk_span_seconds,
    didemo_moment,
    frames_in_moments,
    record_moments,
    sentence_frame_masks,
)
from harness.errors import DataError

NAN = float("nan")


def by_id(root, dataset, split):
    return {r.video_id: r for r in read_dataset(dataset, root, split, require_videos=False)}


def as_lists(moments):
    return [[list(span) for span in spans] for spans in moments]


# ------------------------------------------------------------------ reading
def test_activitynet_timestamps_kept_per_sentence(activitynet, tmp_path):  # noqa: F811
    root, man = activitynet
    recs = {**by_id(root, "activitynet", "train"), **by_id(root, "activitynet", "val_1")}
    for vid, r in recs.items():
        # fixture rule: sentence j covers [2j + 1, 2j + 3] s
        assert as_lists(r.extra["moments"]) == man["moments"][vid]
        assert r.extra["moments"][:2] == (((1.0, 3.0),), ((3.0, 5.0),))
        assert " ".join(r.extra["sentences"]) == r.texts[0]
        assert len(r.extra["sentences"]) == len(r.extra["moments"])

    a = copy_root(root, tmp_path / "a")
    vid = man["splits"]["val_1"][0]
    rewrite_json(a / "val_1.json", lambda d: {**d, vid: {
        "duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42], [9.0, 9.0]],
        "sentences": ["A young woman is seen standing in a room.", " She begins dancing.", "  ",
                      " She ends by bowing."]}})
    rec = by_id(a, "activitynet", "val_1")[vid]
    # the blank third sentence is dropped from both lists; [9, 9] is empty: no moment
    assert rec.extra["sentences"] == ("A young woman is seen standing in a room.", "She begins dancing.",
                                      "She ends by bowing.")
    assert rec.extra["moments"] == (((0.83, 19.86),), ((17.37, 60.81),), ())
    assert record_moments(rec.extra) == ((0.83, 19.86), (17.37, 60.81))

    rewrite_json(a / "val_1.json", lambda d: {**d, vid: {**d[vid], "timestamps": [[0.8, 19.8]]}})
    with pytest.raises(DataError, match=rf"val_1\.json: record '{vid}': field 'timestamps' must be a list of 4"):
        read_dataset("activitynet", a, "val_1", require_videos=False)
    rewrite_json(a / "val_1.json", lambda d: {**d, vid: {**d[vid], "timestamps": [[0, 1], [1, 2], [2, "x"], [3, 4]]}})
    with pytest.raises(DataError, match=r"field 'timestamps'\[2\] must be \[start, end\]"):
        read_dataset("activitynet", a, "val_1", require_videos=False)


def test_didemo_majority_span_per_sentence(didemo, tmp_path):  # noqa: F811
    root, man = didemo
    recs = {**by_id(root, "didemo", "train"), **by_id(root, "didemo", "test")}
    for vid, r in recs.items():
        assert as_lists(r.extra["moments"]) == man["moments"][vid]
        assert len(r.extra["sentences"]) == r.extra["descriptions"] == len(r.extra["moments"])
    # the long video's first sentence has tied votes [[0,0],[0,0],[2,3],[2,3]]: both spans kept
    assert recs[man["long"]].extra["moments"][0] == ((0.0, 5.0), (10.0, 20.0))

    d = copy_root(root, tmp_path / "d")
    vid = man["splits"]["test"][0]
    rows = [{"annotation_id": 1, "description": "the dog runs.", "video": vid,
             "times": [[1, 1], [1, 1], [0, 2], [3, 3]], "num_segments": 6, "dl_link": "x"},
            {"annotation_id": 2, "description": "it stops.", "video": vid,
             "times": [[4, 5], [4, 5], [4, 5], [4, 5]], "num_segments": 6, "dl_link": "x"}]
    (d / "test_data.json").write_text(json.dumps(rows))
    (d / "test_list.txt").write_text(vid + "\n")
    rec = by_id(d, "didemo", "test")[vid]
    # chunk 1 = [5, 10) s (2 of 4 votes beat 1 + 1); chunks 4..5 = [20, 30) s
    assert rec.extra["moments"] == (((5.0, 10.0),), ((20.0, 30.0),))
    assert rec.extra["sentences"] == ("the dog runs.", "it stops.")

    rows[1]["times"] = [[3, 2]]
    (d / "test_data.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"test_data\.json: record \[1\] \(annotation_id 2\): field 'times'"):
        read_dataset("didemo", d, "test", require_videos=False)


def test_didemo_moment_votes_by_hand():
    assert chunk_span_seconds(0, 0) == (0.0, 5.0)
    assert chunk_span_seconds(2, 3) == (10.0, 20.0)       # chunks 2 and 3 = [10, 20) s
    assert chunk_span_seconds(5, 5) == (25.0, 30.0)
    assert didemo_moment([[4, 4], [4, 4], [0, 0], [4, 4]]) == ((20.0, 25.0),)
    assert didemo_moment([[2, 3], [0, 0], [0, 0], [2, 3]]) == ((10.0, 20.0), (0.0, 5.0))   # tie: first voted first
    assert didemo_moment([[1, 1], [2, 2], [3, 3]]) == ((5.0, 10.0), (10.0, 15.0), (15.0, 20.0))
    assert didemo_moment([]) == ()


# ------------------------------------------------------------------ mapping onto frame times
def test_frames_in_moments_by_hand():
    times = np.array([0.0, 4.0, 4.9995, 5.0, 9.99, 10.0, 12.5, NAN, NAN], dtype=np.float32)
    # chunk 1 = [5, 10): 4.9995 is 0.5 ms below the boundary (cache rounding), so it is on it
    assert frames_in_moments(times, [(5.0, 10.0)]).tolist() == \
        [False, False, True, True, True, False, False, False, False]
    assert frames_in_moments(times, [(0.0, 5.0), (10.0, 20.0)]).tolist() == \
        [True, True, False, False, False, True, True, False, False]
    # padding is never inside, even for a moment covering everything
    assert frames_in_moments(times, [(-math.inf, math.inf)]).tolist() == [True] * 7 + [False] * 2
    assert not frames_in_moments(times, []).any()
    masks = sentence_frame_masks(times, (((0.0, 5.0),), (), ((9.0, 12.5),)))
    assert masks.shape == (3, 9) and masks.dtype == bool
    assert masks[1].tolist() == [False] * 9
    assert masks[2].tolist() == [False, False, False, False, True, True, False, False, False]


# ------------------------------------------------------------------ end to end through the cache
def test_decoded_didemo_frames_mapped_to_moments(didemo, tmp_path):  # noqa: F811
    root, man = didemo
    rec = by_id(root, "didemo", "train")[man["long"]]       # 35 s at 2 fps, window [0, 31] s
    moments = rec.extra["moments"]
    assert moments[0] == ((0.0, 5.0), (10.0, 20.0))
    # all 32 samples (t = 0..31 s) and 8 padding slots
    st = FrameSettings(max_frames=40, image_size=16)
    FrameCache.build([rec], st, tmp_path, progress=False)
    times = FrameCache.open(tmp_path, st, "didemo").times(rec.video_id)
    assert np.isnan(times[32:]).all()
    expected = [t < 5 or 10 <= t < 20 for t in range(32)] + [False] * 8
    assert sentence_frame_masks(times, moments)[0].tolist() == expected
    # uniform slicing to 4 frames keeps samples linspace(0, 31, 4) -> 0, 10, 20, 31 s
    st4 = FrameSettings(max_frames=4, image_size=16)
    FrameCache.build([rec], st4, tmp_path, progress=False)
    times4 = FrameCache.open(tmp_path, st4, "didemo").times(rec.video_id)
    assert times4.tolist() == pytest.approx([0.0, 10.0, 20.0, 31.0], abs=1e-3)
    assert frames_in_moments(times4, moments[0]).tolist() == [True, True, False, False]


def test_decoded_activitynet_ntsc_frames_mapped_to_moments(activitynet, tmp_path):  # noqa: F811
    root, man = activitynet
    vid = man["fps29.97"]                                   # 120 frames at 30000/1001 fps: 4 s
    rec = by_id(root, "activitynet", "train")[vid]
    st = FrameSettings(max_frames=6, image_size=16)
    FrameCache.build([rec], st, tmp_path, progress=False)
    times = FrameCache.open(tmp_path, st, "activitynet").times(vid)
    # first frame at/after each second: 0, 30*1001/30000 = 1.001, 2.002, 3.003 s; 2 padding slots
    assert times[:4].tolist() == pytest.approx([0.0, 1.001, 2.002, 3.003], abs=1e-3)
    masks = sentence_frame_masks(times, rec.extra["moments"])
    assert masks[0].tolist() == [False, True, True, False, False, False]    # [1, 3) s
    assert masks[1].tolist() == [False, False, False, True, False, False]   # [3, 5) s
    assert frames_in_moments(times, record_moments(rec.extra)).tolist() == [False, True, True, True, False, False]
