"""The one record type every dataset reader returns, and the per-epoch training pairs."""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MIN_READABLE_VIDEOS", "VideoRecord", "present", "too_few_readable", "training_pairs"]

# What a run needs (harness.train.inputs.prepare_inputs) and what `eabench data check` calls usable:
# one readable train video to learn from, two readable test videos for a retrieval ranking.
MIN_READABLE_VIDEOS: dict[str, int] = {"train": 1, "test": 2}


@dataclass(frozen=True)
class VideoRecord:
    """One video of one split.

    ``path`` is None when the annotation lists the video but no file was found. ``texts`` are the
    captions (MSR-VTT train: all 20; MSR-VTT test: the one JSFusion sentence; ActivityNet and
    DiDeMo: one paragraph). ``start``/``end`` are the clip window in seconds (None = whole file).
    ActivityNet and DiDeMo records also carry ``extra["sentences"]`` (the paragraph's sentences)
    and ``extra["moments"]`` (per sentence, the annotated ``(start_s, end_s)`` intervals; see
    :mod:`harness.data.moments`).
    """

    video_id: str
    path: Path | None
    texts: tuple[str, ...]
    start: float | None = None
    end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def too_few_readable(role: str, readable: int) -> str | None:
    """Why ``readable`` videos are not enough for the ``role`` ("train"/"test") split, else None."""
    need = MIN_READABLE_VIDEOS[role]
    if readable >= need:
        return None
    why = "training needs" if role == "train" else "retrieval metrics need"
    return f"{readable} readable {role} video(s); {why} at least {need}"


def present(records: Iterable[VideoRecord]) -> list[VideoRecord]:
    """The records whose video file exists (the ones a run can use)."""
    return [r for r in records if r.path is not None]


def training_pairs(records: Iterable[VideoRecord], expand: bool,
                   rng: random.Random | None = None) -> list[tuple[str, str]]:
    """(video_id, text) samples for one epoch.

    ``expand=True`` is CLIP4Clip's ``--expand_msrvtt_sentences``: every caption is its own
    sample (MSR-VTT 9k: 180k pairs). ``expand=False`` draws one random caption per video, so call
    this once per epoch with the same ``rng`` to get a new draw each epoch. Order follows the
    records; the data loader shuffles. Records without a file or without a caption are skipped.
    """
    rng = rng or random.Random(0)
    pairs: list[tuple[str, str]] = []
    for rec in records:
        if rec.path is None or not rec.texts:
            continue
        if expand:
            pairs.extend((rec.video_id, t) for t in rec.texts)
        else:
            pairs.append((rec.video_id, rec.texts[rng.randrange(len(rec.texts))]))
    return pairs
