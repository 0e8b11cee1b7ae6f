"""Annotated moments: which seconds of a video each sentence describes, and which sampled frames
fall inside them.

Readers keep the moments with each record (``VideoRecord.extra``):

- ``extra["sentences"]``: the paragraph's sentences, stripped, in paragraph order;
- ``extra["moments"]``: one tuple per sentence (same order) of ``(start_s, end_s)`` intervals
  in the video's own seconds, half-open ``[start_s, end_s)``.

ActivityNet Captions gives one ``[start, end]`` per sentence in seconds (``timestamps``); it is
kept as it is (one interval per sentence). DiDeMo gives, per sentence, one
``[start_chunk, end_chunk]`` vote per annotator in 5-second chunks (chunk i = ``[5i, 5i+5)`` s,
both ends inclusive); :func:`didemo_moment` keeps the span most annotators chose.

Frame times come from the frame cache (``FrameCache.times(video_id)``: float32 ``[T]`` source
seconds, NaN for padding); :func:`frames_in_moments` turns them into a bool mask. Pure functions,
no I/O.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DIDEMO_CHUNK_S",
    "Interval",
    "chunk_span_seconds",
    "didemo_moment",
    "frames_in_moments",
    "record_moments",
    "sentence_frame_masks",
]

Interval = tuple[float, float]
DIDEMO_CHUNK_S = 5.0
# The cache stores frame times rounded to 0.1 ms in float32; a frame that lands within this
# much below a boundary is taken to be on it (e.g. 4.9999 s is the first frame of chunk 1).
_TOL_S = 1e-3


def chunk_span_seconds(start_chunk: int, end_chunk: int) -> Interval:
    """DiDeMo chunks ``[start_chunk, end_chunk]`` (inclusive) as seconds ``[5*start, 5*end + 5)``."""
    return (DIDEMO_CHUNK_S * start_chunk, DIDEMO_CHUNK_S * (end_chunk + 1))


def didemo_moment(votes: Sequence[Sequence[int]]) -> tuple[Interval, ...]:
    """The moment of one DiDeMo sentence from its annotators' ``times`` votes.

    The span chosen by the most annotators wins (a majority vote over exact spans). A researcher
    asking "which frames does this sentence describe" wants the annotators' consensus, which is
    also how DiDeMo's moment-localisation work treats the votes (agreement with most annotators,
    the odd one out discarded); the union would instead stretch a sentence over every chunk
    any single annotator picked, so one careless vote could cover the whole video. Ties (e.g.
    2 votes for ``[0, 0]`` and 2 for ``[2, 3]``) keep every tied span, in the order first voted,
    rather than picking one arbitrarily. No votes -> no moment.
    """
    spans = [(int(a), int(b)) for a, b in votes]
    if not spans:
        return ()
    counts = Counter(spans)
    top = max(counts.values())
    winners = [s for s in dict.fromkeys(spans) if counts[s] == top]
    return tuple(chunk_span_seconds(a, b) for a, b in winners)


def frames_in_moments(times: np.ndarray, moments: Iterable[Interval]) -> np.ndarray:
    """bool ``[T]``: frame ``k`` is True when its time lies in any ``[start, end)`` of ``moments``.

    ``times`` is the cache's float32 ``[T]`` (NaN for padding): padding is never inside.
    """
    t = np.asarray(times, dtype=np.float64)
    inside = np.zeros(t.shape, dtype=bool)
    real = np.isfinite(t)
    for start, end in moments:
        inside |= real & (t >= float(start) - _TOL_S) & (t < float(end) - _TOL_S)
    return inside


def sentence_frame_masks(times: np.ndarray, moments: Sequence[Sequence[Interval]]) -> np.ndarray:
    """bool ``[S, T]``: one :func:`frames_in_moments` row per sentence (``extra["moments"]``)."""
    t = np.asarray(times)
    out = np.zeros((len(moments), t.shape[-1]), dtype=bool)
    for i, spans in enumerate(moments):
        out[i] = frames_in_moments(t, spans)
    return out


def record_moments(extra: dict[str, Any]) -> tuple[Interval, ...]:
    """Every interval of a record (all sentences), for a paragraph-level frame mask; () if the
    dataset has no moments (MSR-VTT)."""
    return tuple(span for spans in extra.get("moments", ()) for span in spans)
