"""Frame sampling against hand computations, masks, preprocessing, normalisation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest_data import didemo, msrvtt  # noqa: F401

from harness.data import read_dataset
from harness.data.fixtures import read_frame_number
from harness.data.frames import CLIP_MEAN, CLIP_STD, FrameSettings, decode_video, normalize, slice_indices
from harness.errors import ConfigError, DataError


def numbers(clip) -> list[int]:
    """Source frame numbers of the real frames (fixture frames spell their number in bands)."""
    return [read_frame_number(f.transpose(1, 2, 0)) for f, m in zip(clip.frames, clip.mask) if m]


def records(fixture, dataset, split):
    return {r.video_id: r for r in read_dataset(dataset, fixture[0], split, require_videos=False)}


@pytest.mark.parametrize("n,t,mode,expected", [
    (10, 4, 0, [0, 1, 2, 3]),
    (10, 4, 1, [6, 7, 8, 9]),
    (10, 4, 2, [0, 3, 6, 9]),        # linspace(0, 9, 4) = 0, 3, 6, 9
    (11, 4, 2, [0, 3, 6, 10]),       # 0, 3.33, 6.67, 10 -> truncated
    (7, 4, 2, [0, 2, 4, 6]),
    (20, 12, 2, [0, 1, 3, 5, 6, 8, 10, 12, 13, 15, 17, 19]),  # 19*k/11 truncated
    (3, 4, 2, [0, 1, 2]),            # shorter: all frames, padding comes later
    (3, 4, 0, [0, 1, 2]),
])
def test_slice_indices_by_hand(n, t, mode, expected):
    assert slice_indices(n, t, mode).tolist() == expected


def test_settings_key_and_validation():
    base = FrameSettings(max_frames=12)
    keys = {base.key(), FrameSettings(64).key(), FrameSettings(12, fps=2).key(),
            FrameSettings(12, image_size=32).key(), FrameSettings(12, slice_framepos=0).key()}
    assert len(keys) == 5
    for bad in ({"max_frames": 0}, {"max_frames": 4, "fps": 0}, {"max_frames": 4, "slice_framepos": 3}):
        with pytest.raises(ConfigError):
            FrameSettings(**bad)


def test_integer_fps_all_slice_modes(msrvtt):  # noqa: F811
    _root, man = msrvtt
    rec = records(msrvtt, "msrvtt", "train9k")["video4"]
    f = man["frames"]["video4"]                      # at 5 fps: seconds 0..floor((f-1)/5)
    assert man["rates"]["video4"] == "5"
    n = (f - 1) // 5 + 1
    per_second = [5 * s for s in range(n)]           # first frame at/after each second
    for mode in (0, 1, 2):
        st = FrameSettings(max_frames=4, slice_framepos=mode, image_size=72)
        clip = decode_video(rec.path, st)
        if mode == 0:
            want = per_second[:4]
        elif mode == 1:
            want = per_second[-4:]
        else:
            want = [per_second[int(k * (n - 1) / 3)] for k in range(4)]
        assert numbers(clip) == want, mode
        assert clip.times.tolist() == pytest.approx([w / 5 for w in want], abs=1e-3)
        assert clip.mask.tolist() == [True] * 4


def test_ntsc_29_97_fps(msrvtt):  # noqa: F811
    _root, man = msrvtt
    rec = records(msrvtt, "msrvtt", "train9k")["video0"]
    assert man["rates"]["video0"] == "30000/1001" and man["frames"]["video0"] == 120
    clip = decode_video(rec.path, FrameSettings(max_frames=8, image_size=72))
    # second s -> first frame with i * 1001/30000 >= s, i.e. ceil(29.97 s): 0, 30, 60, 90
    # (CLIP4Clip's int(29.97) * s would give 0, 29, 58, 87)
    assert numbers(clip) == [math.ceil(s * 30000 / 1001) for s in range(4)] == [0, 30, 60, 90]
    assert clip.times[:4].tolist() == pytest.approx([0, 1.001, 2.002, 3.003], abs=1e-3)
    assert clip.mask.tolist() == [True] * 4 + [False] * 4


def test_short_video_mask_and_padding(msrvtt):  # noqa: F811
    _root, _man = msrvtt
    rec = records(msrvtt, "msrvtt", "train9k")["video1"]      # 3 s at 5 fps = 15 frames
    clip = decode_video(rec.path, FrameSettings(max_frames=12, image_size=32))
    assert clip.frames.shape == (12, 3, 32, 32) and clip.frames.dtype == np.uint8
    assert clip.mask.tolist() == [True] * 3 + [False] * 9
    assert not clip.frames[3:].any()
    assert np.isnan(clip.times[3:]).all()


def test_window_and_feature_framerate(msrvtt, didemo):  # noqa: F811
    rec = records(msrvtt, "msrvtt", "train9k")["video4"]
    st = FrameSettings(max_frames=10, image_size=72)
    assert numbers(decode_video(rec.path, st, start=5, end=8)) == [25, 30, 35, 40]
    # 2 samples per second at 5 fps: t = 0, .5, 1, 1.5 -> frames ceil(5 t) = 0, 3, 5, 8
    st2 = FrameSettings(max_frames=4, fps=2, slice_framepos=0, image_size=72)
    assert numbers(decode_video(rec.path, st2)) == [0, 3, 5, 8]
    # DiDeMo: a 35 s video at 2 fps, window [0, 31] -> 32 samples, frames 2 s
    _root, man = didemo
    long = records(didemo, "didemo", "train")[man["long"]]
    tail = decode_video(long.path, FrameSettings(4, slice_framepos=1, image_size=72), 0, 31)
    assert numbers(tail) == [56, 58, 60, 62]                  # seconds 28..31
    uni = decode_video(long.path, FrameSettings(4, slice_framepos=2, image_size=72), 0, 31)
    assert numbers(uni) == [2 * int(k * 31 / 3) for k in range(4)]  # linspace(0, 31, 4)


def test_resize_crop_matches_pil_bicubic(msrvtt):  # noqa: F811
    import av
    from PIL import Image

    rec = records(msrvtt, "msrvtt", "train9k")["video4"]
    clip = decode_video(rec.path, FrameSettings(max_frames=1, slice_framepos=0, image_size=32))
    with av.open(str(rec.path)) as c:
        first = next(c.decode(video=0)).to_image()              # 96 x 72
    ref = first.resize((round(96 * 32 / 72), 32), Image.BICUBIC)  # short side -> 32: 43 x 32
    left = round((ref.width - 32) / 2.0)
    ref = np.asarray(ref.crop((left, 0, left + 32, 32))).transpose(2, 0, 1).astype(float)
    assert np.abs(clip.frames[0].astype(float) - ref).mean() < 3.0


def test_corrupt_video_raises_with_file_name(msrvtt):  # noqa: F811
    _root, man = msrvtt
    rec = records(msrvtt, "msrvtt", "train9k")[man["corrupt"][0]]
    with pytest.raises(DataError, match=rf"{rec.path.name}: unreadable video"):
        decode_video(rec.path, FrameSettings(4))


def test_normalize_by_hand():
    x = torch.zeros((1, 2, 3, 2, 2), dtype=torch.uint8)
    x[0, 0, 0] = 255
    mask = torch.tensor([[1.0, 0.0]])
    out = normalize(x, mask)
    assert out.dtype == torch.float32
    assert out[0, 0, 0, 0, 0].item() == pytest.approx((1 - CLIP_MEAN[0]) / CLIP_STD[0], rel=1e-6)
    assert out[0, 0, 1, 0, 0].item() == pytest.approx(-CLIP_MEAN[1] / CLIP_STD[1], rel=1e-6)
    assert (out[0, 1] == 0).all()                                # padding is zero after normalising
