"""Frame sampling and CLIP preprocessing (CLIP4Clip ``rawvideo_util.py`` semantics, PyAV decoder).

Sampling. For every grid time ``t = start + k / fps`` inside ``[start, end]`` we take the first
decoded frame whose presentation time is at or after ``t``. CLIP4Clip instead seeks to frame
number ``int(video_fps) * sec``; for integer frame rates both pick the same frame (frame
``fps*sec`` is the first at/after ``sec`` seconds). For 29.97 fps (30000/1001) CLIP4Clip truncates
the rate to 29, so its frame ``29*sec`` lies at ``0.9676*sec`` seconds and drifts one second behind
per ~31 s; we use the true timestamps (frames 0, 30, 60, 90 for seconds 0..3), which is what
the protocol means. Grid points after the last frame yield nothing, exactly as CLIP4Clip's
failed seeks past the end.

Then ``slice_framepos`` cuts the ``n`` sampled frames to ``max_frames``: 0 keeps the head, 1 the
tail, 2 (the paper's setting) ``np.linspace(0, n-1, max_frames).astype(int)``. Shorter clips are
zero-padded at the end with ``mask = 0``.

Preprocessing is split in two so the cache can store uint8: bicubic resize of the short side to
``image_size`` + centre crop happen at decode time (torchvision v2 on uint8 tensors, antialiased
like PIL); the CLIP mean/std normalisation happens when a batch is built (``normalize``), and
padded frames are set to exactly zero *after* normalisation, as CLIP4Clip's zero tensors are.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.errors import ConfigError, DataError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "FORMAT_VERSION",
    "DecodedClip",
    "FrameSettings",
    "decode_video",
    "default_image_size",
    "normalize",
    "settings_for",
    "slice_indices",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FORMAT_VERSION = 1  # bump when the decoded pixels would change for the same settings
_EPS = 1e-4         # timestamps are rounded to the container's time base


@dataclass(frozen=True)
class FrameSettings:
    """Everything that changes the decoded pixels; ``key()`` names the cache folder."""

    max_frames: int
    fps: float = 1.0
    slice_framepos: int = 2
    image_size: int = 224

    def __post_init__(self) -> None:
        # messages name the field and the `eabench data cache` flag that sets it
        if not _is_int(self.max_frames) or self.max_frames < 1:
            raise ConfigError(f"max_frames (--max-frames) must be an integer >= 1, got {self.max_frames!r}")
        if not isinstance(self.fps, int | float) or isinstance(self.fps, bool) \
                or not math.isfinite(self.fps) or self.fps <= 0:
            raise ConfigError(f"feature_framerate fps (--fps) must be a finite number > 0, got {self.fps!r}")
        if self.slice_framepos not in (0, 1, 2) or isinstance(self.slice_framepos, bool):
            raise ConfigError(f"slice_framepos (--slice-framepos) must be 0 (head), 1 (tail) or 2 "
                              f"(uniform), got {self.slice_framepos!r}")
        if not _is_int(self.image_size) or self.image_size < 1:
            raise ConfigError(f"image_size (--image-size) must be an integer >= 1, got {self.image_size!r}")

    def key(self) -> str:
        return (f"T{self.max_frames}_fps{self.fps:g}_slice{self.slice_framepos}"
                f"_px{self.image_size}_v{FORMAT_VERSION}")


def default_image_size(dataset: str) -> int:
    """The input size of the preset's backbone: 32 for the tiny synthetic CLIP, else 224."""
    from harness.presets import get_preset

    return 32 if get_preset(dataset).backbone == "eabench-tiny" else 224


def settings_for(dataset: str, max_frames: int | None = None, fps: float | None = None,
                 slice_framepos: int | None = None, image_size: int | None = None) -> FrameSettings:
    """FrameSettings from the dataset preset; explicit values override it."""
    from harness.presets import get_preset

    p = get_preset(dataset)
    # `is None`, not `or`: an explicit 0 is an error for FrameSettings to report, not "the default"
    return FrameSettings(max_frames=p.max_frames if max_frames is None else max_frames,
                         fps=p.feature_framerate if fps is None else fps,
                         slice_framepos=p.slice_framepos if slice_framepos is None else slice_framepos,
                         image_size=default_image_size(dataset) if image_size is None else image_size)


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


class DecodedClip(NamedTuple):
    frames: np.ndarray  # uint8 [T, 3, S, S], zero after the last real frame
    mask: np.ndarray    # bool [T]
    times: np.ndarray   # float32 [T], source time in seconds of each frame, NaN for padding


def slice_indices(n: int, max_frames: int, slice_framepos: int) -> np.ndarray:
    """Which of ``n`` sampled frames are kept (CLIP4Clip ``--slice_framepos``)."""
    if n <= max_frames:
        return np.arange(n)
    if slice_framepos == 0:
        return np.arange(max_frames)
    if slice_framepos == 1:
        return np.arange(n - max_frames, n)
    return np.linspace(0, n - 1, num=max_frames).astype(int)


def _iter_samples(path: Path, settings: FrameSettings, start: float | None,
                  end: float | None) -> Iterator[tuple[np.ndarray, float]]:
    """Decode once, front to back, yielding (RGB frame, time) for the first frame at/after each
    grid time."""
    import av

    step = 1.0 / settings.fps
    next_t = 0.0 if start is None else max(0.0, float(start))
    stop = float("inf") if end is None else float(end)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base) if stream.time_base else 0.0
            base = stream.start_time * tb if stream.start_time is not None else 0.0
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            if next_t > 2.0:  # long windows with a late start: skip ahead to a keyframe
                container.seek(int((next_t - 1.0 + base) / tb) if tb else 0, stream=stream,
                               backward=True)
            for i, frame in enumerate(container.decode(stream)):
                t = (frame.pts * tb - base) if frame.pts is not None and tb else i / rate
                if next_t > stop + _EPS:
                    break
                took = None
                while t >= next_t - _EPS and next_t <= stop + _EPS:
                    if took is None:
                        took = frame.to_ndarray(format="rgb24")
                    yield took, t
                    next_t += step
    except DataError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: unreadable video ({type(exc).__name__}: {exc})") from None


def _resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> [3, S, S] uint8: bicubic short side to S (antialiased), centre crop."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    x = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    x = F.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return np.ascontiguousarray(F.center_crop(x, [size, size]).numpy())


def decode_video(path: str | Path, settings: FrameSettings, start: float | None = None,
                 end: float | None = None) -> DecodedClip:
    """Decode one clip into ``max_frames`` uint8 frames at ``image_size``, plus mask and times.

    Each sampled frame is resized and cropped as soon as it is decoded, so at most one
    full-resolution frame is alive at a time (a 4096x4096 frame is 48 MiB); a long video
    (ActivityNet: minutes at 1 fps) holds n small frames, not n full-size ones.
    """
    s, t_max = settings.image_size, settings.max_frames
    small: list[np.ndarray] = []
    raw_times: list[float] = []
    prev_rgb: np.ndarray | None = None  # a frame picked by two grid times is resized once
    prev_small: np.ndarray | None = None
    for rgb, t in _iter_samples(Path(path), settings, start, end):
        if rgb is not prev_rgb:
            prev_rgb, prev_small = rgb, _resize_crop(rgb, s)
        small.append(prev_small)
        raw_times.append(t)
    del prev_rgb
    if not raw_times:
        raise DataError(f"{path}: no frame inside the window [{start}, {end}] s")
    sampled = np.stack(small)
    keep = slice_indices(len(sampled), t_max, settings.slice_framepos)
    frames = np.zeros((t_max, 3, s, s), dtype=np.uint8)
    frames[: len(keep)] = sampled[keep]
    mask = np.zeros(t_max, dtype=bool)
    mask[: len(keep)] = True
    times = np.full(t_max, np.nan, dtype=np.float32)
    times[: len(keep)] = np.asarray(raw_times, dtype=np.float64)[keep]
    return DecodedClip(frames, mask, times)


def normalize(frames, mask=None):  # type: ignore[no-untyped-def]
    """uint8 ``[..., 3, S, S]`` tensor -> float32 CLIP-normalised; padded frames exactly zero.

    Works on any device, so a training loop can move uint8 to the GPU (4x less traffic) and
    normalise there. ``mask`` has the shape of the leading dims (``[B, T]``).
    """
    import torch

    x = frames.to(torch.float32)
    # (x/255 - mean)/std as one multiply and one add per element
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    x.mul_(1.0 / (255.0 * std)).add_(-mean / std)
    if mask is not None:
        pad = mask.to(device=x.device) == 0
        x.masked_fill_(pad[..., None, None, None], 0.0)
    return x
