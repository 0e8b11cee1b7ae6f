"""The synthetic benchmark's settings and vocabulary: colours, shapes, caption templates."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

__all__ = ["COLORS", "K_OBJECTS", "SHAPES", "TEMPLATES", "SyntheticConfig"]

# Saturated colours, far apart in hue; distractors are greyscale, so saturation separates classes.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 235), "yellow": (240, 220, 20),
    "purple": (150, 40, 210), "cyan": (20, 210, 220), "orange": (250, 140, 0), "pink": (250, 100, 200),
}
SHAPES = ("circle", "square", "triangle", "cross")
TEMPLATES = (
    "a {a} and then a {b}",
    "a {a} followed by a {b}",
    "first a {a} then a {b}",
    "a video of a {a} and a {b}",
    "a {a} appears before a {b}",
)
K_OBJECTS = 2


@dataclass(frozen=True)
class SyntheticConfig:
    num_train: int = 600
    num_test: int = 100
    frames: int = 12                      # seconds per video (1 sampled frame per second)
    distractor_fraction: float = 0.5
    placement: str = "fixed"              # "fixed" | "random"
    difficulty: str = "easy"              # "easy" | "hard"
    seed: int = 0
    width: int = 64
    height: int = 48
    fps: int = 2
    pretrain_clip: bool = True
    pretrain_steps: int = 1000            # ~45 s of one CPU core
    captions_per_video: int = field(default=len(TEMPLATES))

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"SyntheticConfig.{key}={value!r}: {allowed}")

        if self.placement not in ("fixed", "random"):
            raise bad("placement", self.placement, "use 'fixed' or 'random'")
        if self.difficulty not in ("easy", "hard"):
            raise bad("difficulty", self.difficulty, "use 'easy' or 'hard'")
        if self.num_train < 1 or self.num_test < 1:
            raise bad("num_train/num_test", (self.num_train, self.num_test), "need at least 1 each")
        max_test = math.comb(len(COLORS) * len(SHAPES), K_OBJECTS)
        if self.num_test > max_test:
            raise bad("num_test", self.num_test, f"at most {max_test} (unique object pairs)")
        if self.frames < 2:
            raise bad("frames", self.frames, "need at least 2 seconds")
        if not 0.0 <= self.distractor_fraction < 1.0:
            raise bad("distractor_fraction", self.distractor_fraction, "use a value in [0, 1)")
        if self.num_relevant < K_OBJECTS:
            raise bad("distractor_fraction", self.distractor_fraction,
                      f"leaves {self.num_relevant} relevant seconds; need at least {K_OBJECTS}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise bad("width/height", (self.width, self.height), "use even sizes of at least 32")
        if self.fps < 1:
            raise bad("fps", self.fps, "use at least 1")
        if not 1 <= self.captions_per_video <= len(TEMPLATES):
            raise bad("captions_per_video", self.captions_per_video, f"use 1..{len(TEMPLATES)}")

    @property
    def num_relevant(self) -> int:
        return round(self.frames * (1.0 - self.distractor_fraction))
