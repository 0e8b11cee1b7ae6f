"""Drawing the synthetic benchmark's frames: coloured objects on grey, and greyscale distractors.

Used by the video generator and by the tiny CLIP's pre-training, which renders frames directly.
"""
from __future__ import annotations

import math

import numpy as np

from harness.synthetic.config import COLORS, SHAPES

__all__ = ["object_phrase", "render_distractor_frame", "render_object_frame"]


def object_phrase(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.85
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":  # apex up, base at cy + 0.8 r
        top, bottom = cy - r, cy + 0.8 * r
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= (yy - top) * (r / (bottom - top)))
    if shape == "cross":
        t = r / 3.0
        return ((np.abs(dx) <= t) & (np.abs(dy) <= r)) | ((np.abs(dy) <= t) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _grey_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = rng.uniform(95.0, 160.0)
    noise = rng.normal(0.0, 6.0, size=(h, w, 1))
    return np.repeat(level + noise, 3, axis=2)


def _place(rng: np.random.Generator, h: int, w: int, r: float) -> tuple[float, float]:
    # keep objects inside the central square: the loader resizes the short side and centre-crops
    margin_x = (w - h) / 2.0 if w > h else 0.0
    margin_y = (h - w) / 2.0 if h > w else 0.0
    cx = rng.uniform(margin_x + r + 1, w - margin_x - r - 1)
    cy = rng.uniform(margin_y + r + 1, h - margin_y - r - 1)
    return cx, cy


def render_object_frame(rng: np.random.Generator, color: str, shape: str, width: int,
                        height: int) -> np.ndarray:
    """A relevant frame: one coloured object on a neutral grey background, uint8 [H, W, 3]."""
    img = _grey_background(rng, height, width)
    r = rng.uniform(0.22, 0.32) * min(width, height)
    cx, cy = _place(rng, height, width, r)
    rgb = np.clip(np.asarray(COLORS[color], np.float32) + rng.uniform(-15, 15, size=3), 0, 255)
    img[_shape_mask(shape, height, width, cx, cy, r)] = rgb
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_distractor_frame(rng: np.random.Generator, difficulty: str, width: int,
                            height: int) -> np.ndarray:
    """A distractor frame (greyscale): dim block noise (easy) or grey clutter shapes (hard)."""
    if difficulty == "easy":
        blocks = rng.uniform(5.0, 55.0, size=(math.ceil(height / 4), math.ceil(width / 4)))
        grey = np.kron(blocks, np.ones((4, 4)))[:height, :width]
        img = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        img = _grey_background(rng, height, width)
        for _ in range(int(rng.integers(2, 5))):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            r = rng.uniform(0.12, 0.22) * min(width, height)
            cx, cy = _place(rng, height, width, r)
            img[_shape_mask(shape, height, width, cx, cy, r)] = rng.choice([rng.uniform(20, 70),
                                                                            rng.uniform(190, 245)])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
