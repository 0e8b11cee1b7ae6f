"""Readers on their fixtures: counts, texts, windows, file naming, malformed annotations."""
from __future__ import annotations

import json
import math
import random
import shutil

import pytest
from conftest_data import activitynet, copy_root, didemo, msrvtt, rewrite_json  # noqa: F401

from harness.data import read_dataset, training_pairs
from harness.errors import DataError


# ------------------------------------------------------------------ MSR-VTT
def test_msrvtt_counts_captions_and_files(msrvtt):  # noqa: F811
    root, man = msrvtt
    # 8 videos: the last max(3, 8 // 4) = 3 are the test split, the other 5 train;
    # train.7k = 5*7//9 = 3
    train = read_dataset("msrvtt", root, "train9k", require_videos=False)
    assert [r.video_id for r in train] == [f"video{i}" for i in range(5)]
    assert [r.video_id for r in read_dataset("msrvtt", root, "train7k")] == \
        [f"video{i}" for i in range(3)]
    for r in train:
        assert r.texts == tuple(man["captions"][r.video_id])  # all 4 captions, JSON order
        assert r.start is None and r.end is None             # clips are pre-cut
    by_id = {r.video_id: r for r in train}
    assert by_id["video3"].path.name == "video3.webm"        # .mp4 absent -> .webm
    assert by_id["video0"].path.name == "video0.mp4"
    assert by_id["video0"].path.parent.name == "all"         # Frozen-in-Time videos/all/
    test = read_dataset("msrvtt", root, "test1kA")
    assert [r.video_id for r in test] == ["video5", "video6", "video7"]
    assert test[0].texts == (man["captions"]["video5"][0],)  # the one JSFusion sentence
    assert test[2].path is None                              # listed but missing


def test_msrvtt_expand_and_training_pairs(msrvtt):  # noqa: F811
    root, _ = msrvtt
    recs = read_dataset("msrvtt", root, "train9k")
    assert len(read_dataset("msrvtt", root, "train9k", expand_sentences=True)) == 5 * 4
    pairs = training_pairs(recs, expand=True)
    assert len(pairs) == 20 and len(set(pairs)) == 20
    rng = random.Random(1)
    epochs = [training_pairs(recs, expand=False, rng=rng) for _ in range(5)]
    assert all(len(e) == 5 for e in epochs)
    texts = {r.video_id: set(r.texts) for r in recs}
    assert all(t in texts[v] for e in epochs for v, t in e)
    assert len({tuple(e) for e in epochs}) > 1               # a new draw each epoch


# ------------------------------------------------------------------ ActivityNet
def test_activitynet_paragraphs_windows_and_both_namings(activitynet):  # noqa: F811
    root, man = activitynet
    train = read_dataset("activitynet", root, "train")
    assert [r.video_id for r in train] == man["splits"]["train"]   # train_ids.json order
    val = read_dataset("activitynet", root, "val_1")
    assert [r.video_id for r in val] == man["splits"]["val_1"]     # derived from the keys
    for r in train + val:
        assert r.texts == (man["paragraphs"][r.video_id],)
        assert "  " not in r.texts[0] and not r.texts[0].startswith(" ")
        assert r.start == 0.0 and r.end == math.ceil(man["durations"][r.video_id])
        if r.video_id in man["missing"]:
            assert r.path is None
        else:
            assert r.path.name == man["files"][r.video_id]
    names = [r.path.name for r in train + val if r.path is not None]
    assert any(n.startswith("v_") for n in names)
    assert any(not n.startswith("v_") and n.endswith(".mkv") for n in names)
    assert any(n.endswith(".webm") for n in names)


def test_activitynet_ids_file_order_and_unknown_id(activitynet, tmp_path):  # noqa: F811
    root = copy_root(activitynet[0], tmp_path / "anet")
    ids = json.loads((root / "train_ids.json").read_text())
    (root / "train_ids.json").write_text(json.dumps(ids[::-1][:3]))
    assert [r.video_id for r in read_dataset("activitynet", root, "train")] == ids[::-1][:3]
    (root / "train_ids.json").write_text(json.dumps([ids[0], "v_notthere"]))
    with pytest.raises(DataError, match=r"train_ids\.json.*\[1\].*v_notthere"):
        read_dataset("activitynet", root, "train")


# ------------------------------------------------------------------ DiDeMo
def test_didemo_exact_names_paragraphs_window(didemo):  # noqa: F811
    root, man = didemo
    train = read_dataset("didemo", root, "train")
    test = read_dataset("didemo", root, "test")
    assert [r.video_id for r in train] == man["splits"]["train"]
    assert [r.video_id for r in test] == man["splits"]["test"]   # the unlisted video is left out
    assert man["unlisted"] not in {r.video_id for r in test}
    for r in train + test:
        assert (r.start, r.end) == (0.0, 31.0)
        assert r.texts == (man["paragraphs"][r.video_id],)      # descriptions in JSON order
        if r.video_id in man["missing"]:
            assert r.path is None
        else:
            assert r.path.name == r.video_id                    # exact file name
    ids = {r.video_id for r in train + test}
    assert any(v.endswith(".") for v in ids)
    assert any(v.endswith(".null") for v in ids)
    assert {v.rsplit(".", 1)[1] for v in ids} >= {"m4v", "mov", "3gp", "null", ""}


def test_didemo_paragraph_follows_json_order(didemo, tmp_path):  # noqa: F811
    root = copy_root(didemo[0], tmp_path / "d")
    vid = read_dataset("didemo", root, "test")[0].video_id
    rewrite_json(root / "test_data.json", lambda rows: rows[::-1])
    descs = [a["description"] for a in json.loads((root / "test_data.json").read_text())
             if a["video"] == vid]
    assert read_dataset("didemo", root, "test")[0].texts == (" ".join(descs),)


# ------------------------------------------------------------------ where files live
def test_videos_dir_option_and_error_names_searched_folders(msrvtt, tmp_path):  # noqa: F811
    root = copy_root(msrvtt[0], tmp_path / "m")
    elsewhere = tmp_path / "store" / "clips"
    shutil.move(str(root / "videos"), str(elsewhere))
    with pytest.raises(DataError) as exc:
        read_dataset("msrvtt", root, "train9k")
    assert str(root) in str(exc.value) and str(root / "videos") in str(exc.value)
    recs = read_dataset("msrvtt", root, "train9k", videos=tmp_path / "store")
    assert all(r.path is not None and elsewhere in r.path.parents for r in recs)


def test_unknown_split_and_missing_annotation(msrvtt, tmp_path):  # noqa: F811
    with pytest.raises(DataError, match="train9k"):
        read_dataset("msrvtt", msrvtt[0], "train")
    with pytest.raises(DataError, match=r"train_data\.json"):
        read_dataset("didemo", tmp_path, "train")


# ------------------------------------------------------------------ malformed input
def test_bad_json_names_file_and_line(activitynet, tmp_path):  # noqa: F811
    root = copy_root(activitynet[0], tmp_path / "a")
    (root / "val_1.json").write_text('{"v_x": {"duration": 3,\n "sentences": [}')
    with pytest.raises(DataError, match=r"val_1\.json: not valid JSON \(line 2"):
        read_dataset("activitynet", root, "val_1")


def test_missing_field_names_file_record_field(activitynet, didemo, msrvtt, tmp_path):  # noqa: F811
    a = copy_root(activitynet[0], tmp_path / "a")
    key = read_dataset("activitynet", a, "val_1", require_videos=False)[0].video_id
    rewrite_json(a / "val_1.json", lambda d: {**d, key: {"sentences": ["x"]}})
    with pytest.raises(DataError, match=rf"val_1\.json: record '{key}': missing field 'duration'"):
        read_dataset("activitynet", a, "val_1")

    d = copy_root(didemo[0], tmp_path / "d")
    rewrite_json(d / "train_data.json", lambda rows: [*rows[:2], {"annotation_id": 77, "video": "a.mov"}])
    with pytest.raises(DataError, match=r"train_data\.json: record \[2\] \(annotation_id 77\): "
                                        r"missing field 'description'"):
        read_dataset("didemo", d, "train")

    m = copy_root(msrvtt[0], tmp_path / "m")
    rewrite_json(m / "MSRVTT_data.json",
                 lambda j: {**j, "sentences": [*j["sentences"][:5], {"video_id": "video1", "caption": 3}]})
    with pytest.raises(DataError, match=r"MSRVTT_data\.json: sentences\[5\]: field 'caption' must be str"):
        read_dataset("msrvtt", m, "train9k")


def test_wrong_csv_header(msrvtt, tmp_path):  # noqa: F811
    m = copy_root(msrvtt[0], tmp_path / "m")
    (m / "MSRVTT_JSFUSION_test.csv").write_text("key,video,sentence\nret0,video6,a cat\n")
    with pytest.raises(DataError, match=r"MSRVTT_JSFUSION_test\.csv: CSV header .* lacks column"):
        read_dataset("msrvtt", m, "test1kA")
    (m / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n\n")
    assert len(read_dataset("msrvtt", m, "train9k")) == 1  # blank trailing lines are fine


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "sub/../../x.mp4",
                                 "C:\\videos\\x.mp4"])
def test_path_traversal_rejected(didemo, msrvtt, tmp_path, bad):  # noqa: F811
    d = copy_root(didemo[0], tmp_path / "d")
    rewrite_json(d / "test_data.json", lambda rows: [*rows, {**rows[0], "video": bad}])
    with pytest.raises(DataError, match=r"test_data\.json: record .*'video'.*leave the data root"):
        read_dataset("didemo", d, "test")
    (d / "test_data.json").unlink()
    shutil.copy(didemo[0] / "test_data.json", d / "test_data.json")
    (d / "test_list.txt").write_text(f"{bad}\n")
    with pytest.raises(DataError, match=r"test_list\.txt: record line 1"):
        read_dataset("didemo", d, "test")
    m = copy_root(msrvtt[0], tmp_path / "m")
    (m / "MSRVTT_train.9k.csv").write_text(f"video_id\n{bad}\n")
    with pytest.raises(DataError, match=r"MSRVTT_train\.9k\.csv: record line 2"):
        read_dataset("msrvtt", m, "train9k")
