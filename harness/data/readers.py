"""Dataset readers: the official on-disk layouts (DATASETS.md §1) -> ``VideoRecord`` lists.

One function per dataset parses the annotation files of one split; ``read_dataset`` picks the
reader from the dataset preset (``synthetic`` is written in the MSR-VTT layout) and resolves the
video files through one ``VideoIndex``. Every malformed input raises ``DataError`` naming the file,
the record and the field. Annotation files are read as UTF-8 (a byte-order mark is fine); any
other encoding is an error naming the first bad byte. ActivityNet ``timestamps`` and DiDeMo
``times`` become ``extra["moments"]`` (see :mod:`harness.data.moments`).
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.lookup import VideoIndex, safe_relative_name, search_dirs
from harness.data.moments import Interval, didemo_moment
from harness.data.records import VideoRecord
from harness.errors import DataError

__all__ = ["OFFICIAL_SIZES", "SPLITS", "SplitRead", "read_dataset", "read_split", "reader_name"]

# Annotation files per reader and split (DATASETS.md §1).
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "msrvtt": {
        "train9k": ("MSRVTT_train.9k.csv", "MSRVTT_data.json"),
        "train7k": ("MSRVTT_train.7k.csv", "MSRVTT_data.json"),
        "test1kA": ("MSRVTT_JSFUSION_test.csv",),
    },
    "activitynet": {
        "train": ("train.json", "train_ids.json"),
        "val_1": ("val_1.json", "val_ids.json"),
        "val_2": ("val_2.json", "val_2_ids.json"),
    },
    "didemo": {
        "train": ("train_data.json", "train_list.txt"),
        "val": ("val_data.json", "val_list.txt"),
        "test": ("test_data.json", "test_list.txt"),
    },
}

# Official numbers of videos per split (DATASETS.md §1), shown beside the found counts.
OFFICIAL_SIZES: dict[str, dict[str, int]] = {
    "msrvtt": {"train9k": 9000, "train7k": 7010, "test1kA": 1000},
    "activitynet": {"train": 10009, "val_1": 4917, "val_2": 4885},
    "didemo": {"train": 8392, "val": 1065, "test": 1004},
}

DIDEMO_WINDOW = (0.0, 31.0)  # CLIP4Clip forces [0, 31] s: annotations stop at 30 s


@dataclass
class SplitRead:
    """What a reader found: the records, notes worth showing a user, and the searched folders."""

    records: list[VideoRecord]
    notes: list[str] = field(default_factory=list)
    searched: str = ""


def reader_name(dataset: str) -> str:
    from harness.presets import get_preset

    return get_preset(dataset).reader


def read_dataset(name: str, root: str | Path, split: str, videos: str | Path | None = None, *,
                 expand_sentences: bool = False, require_videos: bool = True,
                 index: VideoIndex | None = None) -> list[VideoRecord]:
    """Read one split of a dataset.

    ``expand_sentences=True`` returns one record per caption (the paper's
    ``expand_msrvtt_sentences``; video ids repeat). The default keeps one record per video with
    all its captions in ``texts``; ``training_pairs`` then expands or samples per epoch.
    With ``require_videos`` (default) a split whose videos are all missing is an error naming
    the folders that were searched.
    """
    res = read_split(name, root, split, videos, index=index)
    if require_videos and res.records and all(r.path is None for r in res.records):
        raise DataError(f"{name} {split}: none of the {len(res.records)} listed videos was found; "
                        f"searched (recursively): {res.searched}. Pass --videos DIR pointing at "
                        "the folder that holds the video files")
    if not expand_sentences:
        return res.records
    out: list[VideoRecord] = []
    for r in res.records:
        out.extend(VideoRecord(r.video_id, r.path, (t,), r.start, r.end, dict(r.extra))
                   for t in r.texts)
    return out


def read_split(name: str, root: str | Path, split: str, videos: str | Path | None = None, *,
               index: VideoIndex | None = None) -> SplitRead:
    reader = reader_name(name)
    root = Path(root)
    if split not in SPLITS[reader]:
        raise DataError(f"{name}: unknown split {split!r}; choose one of {', '.join(SPLITS[reader])}")
    if not root.is_dir():
        raise DataError(f"{name}: data root {root} is not a folder; pass --root DIR holding the "
                        f"annotation files ({', '.join(SPLITS[reader][split])})")
    if index is None:
        index = VideoIndex(search_dirs(root, Path(videos) if videos else None))
    res: SplitRead = _READERS[reader](root, split, index)
    res.searched = index.describe()
    for r in res.records:
        r.extra.setdefault("dataset", name)
        r.extra.setdefault("split", split)
    return res


# ---------------------------------------------------------------- helpers
def _need(root: Path, fname: str) -> Path:
    p = root / fname
    if not p.is_file():
        raise DataError(f"{p}: annotation file not found; put it in the data root (--root)")
    return p


def _read_text(path: Path) -> str:
    """The whole file as text: UTF-8, with or without a byte-order mark (Excel writes one)."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start  # an offset in the file, BOM included
        raise DataError(f"{path}: not UTF-8 (byte 0x{data[at]:02x} at offset {at}); "
                        "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None


def _field(rec: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if not isinstance(rec, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise DataError(f"{path}: {where}: missing field {key!r}")
    val = rec[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where}: field {key!r} must be {want}, got {val!r}")
    return val


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    lacking = [c for c in columns if c not in header]
    if lacking:
        raise DataError(f"{path}: CSV header {header} lacks column(s) {lacking}; expected "
                        f"header: {','.join(columns)}")
    reader.fieldnames = header
    rows = []
    for i, row in enumerate(reader, start=2):  # line 1 is the header
        for c in columns:
            if not (row.get(c) or "").strip():
                raise DataError(f"{path}: line {i}: empty field {c!r}")
        rows.append({k: (v or "").strip() for k, v in row.items() if k is not None})
    return rows


def _paragraph(parts: list[str]) -> str:
    # CLIP4Clip joins with " " (ActivityNet sentences already start with a space); the tokenizer
    # collapses whitespace, so stripping first gives the same tokens and a clean text.
    return " ".join(p.strip() for p in parts if p.strip())


# ---------------------------------------------------------------- MSR-VTT
def _msrvtt(root: Path, split: str, index: VideoIndex) -> SplitRead:
    notes: list[str] = []
    records: list[VideoRecord] = []
    if split == "test1kA":
        path = _need(root, "MSRVTT_JSFUSION_test.csv")
        seen: set[str] = set()
        for i, row in enumerate(_read_csv(path, ("key", "vid_key", "video_id", "sentence")), 2):
            vid = safe_relative_name(row["video_id"], path, f"line {i}", "video_id")
            if vid in seen:
                notes.append(f"{path.name}: line {i}: {vid} listed twice; kept the first")
                continue
            seen.add(vid)
            records.append(VideoRecord(vid, _msrvtt_file(index, vid), (row["sentence"],),
                                       None, None, {"key": row["key"]}))
        return SplitRead(records, notes)

    csv_name, json_name = SPLITS["msrvtt"][split]
    path = _need(root, csv_name)
    ids: list[str] = []
    for i, row in enumerate(_read_csv(path, ("video_id",)), 2):
        ids.append(safe_relative_name(row["video_id"], path, f"line {i}", "video_id"))
    jpath = _need(root, json_name)
    data = _load_json(jpath)
    sentences = _field(data, "sentences", list, jpath, "top level")
    captions: dict[str, list[str]] = {}
    for j, s in enumerate(sentences):
        where = f"sentences[{j}]"
        vid = _field(s, "video_id", str, jpath, where)
        captions.setdefault(vid, []).append(_field(s, "caption", str, jpath, where).strip())
    meta: dict[str, dict[str, Any]] = {}
    for v in data.get("videos", []) or []:
        if isinstance(v, dict) and isinstance(v.get("video_id"), str):
            meta[v["video_id"]] = {k: v[k] for k in ("url", "category") if k in v}
    seen = set()
    for vid in ids:
        if vid in seen:
            notes.append(f"{csv_name}: {vid} listed twice; kept the first")
            continue
        seen.add(vid)
        if vid not in captions:
            raise DataError(f"{jpath}: video {vid!r} (listed in {csv_name}) has no entry in "
                            "'sentences'; the CSV and the JSON come from different releases?")
        # Clips are already cut: "start time"/"end time" refer to the YouTube source, so the
        # window is the whole file, as in CLIP4Clip.
        records.append(VideoRecord(vid, _msrvtt_file(index, vid), tuple(captions[vid]), None, None,
                                   dict(meta.get(vid, {}))))
    return SplitRead(records, notes)


def _msrvtt_file(index: VideoIndex, vid: str) -> Path | None:
    return index.by_stem_ext(vid, (".mp4", ".webm"))


# ---------------------------------------------------------------- ActivityNet
def _activitynet(root: Path, split: str, index: VideoIndex) -> SplitRead:
    json_name, ids_name = SPLITS["activitynet"][split]
    path = _need(root, json_name)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object keyed by video id (v_<youtube id>), got "
                        f"{type(data).__name__}")
    notes: list[str] = []
    ids_path = root / ids_name
    if ids_path.is_file():
        ids = _load_json(ids_path)
        if not isinstance(ids, list):
            raise DataError(f"{ids_path}: expected a JSON list of video ids, got {type(ids).__name__}")
        for k, vid in enumerate(ids):
            if not isinstance(vid, str):
                raise DataError(f"{ids_path}: item [{k}] must be a string video id, got {vid!r}")
            if vid not in data:
                raise DataError(f"{ids_path}: item [{k}] {vid!r} has no entry in {json_name}")
    else:
        ids = list(data.keys())
        notes.append(f"{ids_name} absent: used the {len(ids)} keys of {json_name}")
    records = []
    for vid in ids:
        safe_relative_name(vid, path, repr(vid), "key")
        rec = data[vid]
        duration = _field(rec, "duration", (int, float), path, f"record {vid!r}")
        sentences = _field(rec, "sentences", list, path, f"record {vid!r}")
        for k, s in enumerate(sentences):
            if not isinstance(s, str):
                raise DataError(f"{path}: record {vid!r}: field 'sentences'[{k}] must be a string, "
                                f"got {s!r}")
        if not math.isfinite(duration) or duration <= 0:
            raise DataError(f"{path}: record {vid!r}: field 'duration' must be > 0, got {duration!r}")
        moments = _anet_moments(rec, len(sentences), path, vid, notes)
        bare = vid.removeprefix("v_")
        file = index.by_any_ext((vid, bare))
        # Paragraph protocol: whole video, window [0, ceil(duration)] s.
        extra = {"duration": float(duration), **_sentence_moments(sentences, moments)}
        records.append(VideoRecord(vid, file, (_paragraph(sentences),), 0.0,
                                   float(math.ceil(duration)), extra))
    return SplitRead(records, notes)


def _anet_moments(rec: dict[str, Any], n: int, path: Path, vid: str,
                  notes: list[str]) -> list[tuple[Interval, ...]]:
    """``timestamps`` ([start, end] seconds per sentence) -> one interval per sentence."""
    if "timestamps" not in rec:
        return [()] * n
    stamps = rec["timestamps"]
    if not isinstance(stamps, list) or len(stamps) != n:
        raise DataError(f"{path}: record {vid!r}: field 'timestamps' must be a list of {n} "
                        f"[start, end] pairs (one per sentence), got {stamps!r}")
    out: list[tuple[Interval, ...]] = []
    for k, pair in enumerate(stamps):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                        for x in pair)):
            raise DataError(f"{path}: record {vid!r}: field 'timestamps'[{k}] must be [start, end] "
                            f"in seconds, got {pair!r}")
        start, end = float(pair[0]), float(pair[1])
        if end <= start:
            notes.append(f"{path.name}: record {vid!r}: 'timestamps'[{k}] = {pair!r} is empty or "
                         "reversed; that sentence has no moment")
            out.append(())
        else:
            out.append(((start, end),))
    return out


def _sentence_moments(sentences: list[str], moments: list[tuple[Interval, ...]]) -> dict[str, Any]:
    """``extra["sentences"]``/``extra["moments"]`` aligned with the paragraph (empty ones dropped)."""
    keep = [k for k, text in enumerate(sentences) if text.strip()]
    return {"sentences": tuple(sentences[k].strip() for k in keep),
            "moments": tuple(moments[k] for k in keep)}


# ---------------------------------------------------------------- DiDeMo
def _didemo(root: Path, split: str, index: VideoIndex) -> SplitRead:
    json_name, list_name = SPLITS["didemo"][split]
    jpath, lpath = _need(root, json_name), _need(root, list_name)
    data = _load_json(jpath)
    if not isinstance(data, list):
        raise DataError(f"{jpath}: expected a JSON list of annotations, got {type(data).__name__}")
    texts: dict[str, list[str]] = {}
    moments: dict[str, list[tuple[Interval, ...]]] = {}
    for j, ann in enumerate(data):
        where = f"record [{j}]" + (f" (annotation_id {ann['annotation_id']})"
                                   if isinstance(ann, dict) and "annotation_id" in ann else "")
        name = safe_relative_name(_field(ann, "video", str, jpath, where), jpath, where, "video")
        texts.setdefault(name, []).append(_field(ann, "description", str, jpath, where))
        moments.setdefault(name, []).append(_didemo_votes(ann, jpath, where))
    listed: list[str] = []
    for i, line in enumerate(_read_text(lpath).split("\n"), 1):
        name = line.rstrip("\r").strip(" \t")  # keep a trailing '.', it is part of the name
        if name:
            listed.append(safe_relative_name(name, lpath, f"line {i}", "video file name"))
    notes: list[str] = []
    no_caption = [n for n in listed if n not in texts]
    if no_caption:
        notes.append(f"{len(no_caption)} video(s) in {list_name} have no annotation in {json_name}"
                     f" and are left out (CLIP4Clip keeps the intersection), e.g. {no_caption[0]!r}")
    records = []
    seen: set[str] = set()
    for name in listed:
        if name in texts and name not in seen:
            seen.add(name)
            records.append(VideoRecord(name, index.by_exact_name(name), (_paragraph(texts[name]),),
                                       *DIDEMO_WINDOW, {"descriptions": len(texts[name]),
                                                        **_sentence_moments(texts[name], moments[name])}))
    return SplitRead(records, notes)


def _didemo_votes(ann: dict[str, Any], path: Path, where: str) -> tuple[Interval, ...]:
    """``times`` (per annotator [start_chunk, end_chunk]) -> the majority span(s) in seconds."""
    if "times" not in ann:
        return ()
    votes = ann["times"]
    ok = isinstance(votes, list) and all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(c, int) and not isinstance(c, bool)
                                                    for c in v) and 0 <= v[0] <= v[1]
        for v in votes)
    if not ok:
        raise DataError(f"{path}: {where}: field 'times' must be a list of [start_chunk, end_chunk] "
                        f"integer pairs with 0 <= start <= end (5-second chunks), got {votes!r}")
    return didemo_moment(votes)


_READERS: dict[str, Callable[[Path, str, VideoIndex], SplitRead]] = {
    "msrvtt": _msrvtt, "activitynet": _activitynet, "didemo": _didemo,
}
