"""The embedded synthetic benchmark: tiny videos whose relevant frames are known.

What it is. Every video lasts ``frames`` seconds (12, = MSR-VTT's ``max_frames``, so at 1 frame per
second the sampled frame positions are the seconds). A fraction ``1 - distractor_fraction`` of the
seconds are *relevant*: each shows one coloured object (8 colours × 4 shapes) on a neutral grey
background at a random position and size. A video holds K = 2 objects: the first half of its
relevant seconds shows object A, the second half object B, and the captions name both in that
order ("a red circle and then a blue square", five paraphrase templates). The other seconds are
*distractors* that carry no caption information and are greyscale as a class:

- ``easy``: dim grey block noise (dark, textured, no object);
- ``hard``: the same grey background as relevant frames with 2-4 greyscale clutter shapes drawn
  from the same shape vocabulary; only colour separates them from relevant frames, and the
  shapes in them are words of the captions, so a mean over frames is confused by them.

``placement="fixed"`` puts the relevant seconds in one contiguous central block in every video,
so frame *position* alone tells which frames matter; ``placement="random"`` draws the positions per
video, so a frame weighting has to follow frame *content*.

The data is written in the exact MSR-VTT layout (DATASETS.md §1.1) and read by the MSR-VTT
reader: ``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``, ``MSRVTT_train.7k.csv``,
``MSRVTT_JSFUSION_test.csv`` (one caption per test video; test videos have distinct unordered
object pairs, so every test caption is unique and no two differ only by order) and
``videos/all/videoN.mp4`` (MPEG-4 Part 2, bit-exact flags, single thread: byte-identical for a
seed). ``synthetic_truth.json`` records the config and, per video, the relevant seconds and the
objects. With ``pretrain_clip`` the tiny CLIP is pre-trained on single frames of the train split
and saved to ``clip/eabench-tiny.safetensors``.

What it measures: whether a head learns to weight frames by relevance (compare excitation gates /
aggregation weights with ``relevant_seconds``), whether position-based weighting suffices
(fixed) or content-based weighting is needed (random), and retrieval R@K of a tiny CLIP on CPU.
What it does not measure: anything about natural video, motion, language variety, or the absolute
numbers of the paper; a tiny CLIP at 32 px is no ViT-B/32, and rankings of variants here need not
carry over to MSR-VTT.

Modules, dependencies one way: ``config`` (settings, vocabulary) ← ``render`` (drawing frames) and
``truth`` (relevant seconds/frames, the truth file) ← ``pretrain`` (the tiny CLIP's pre-training)
← ``generate`` (writing the dataset). The public names of all five are re-exported here.
"""
from __future__ import annotations

from harness.synthetic.config import COLORS, K_OBJECTS, SHAPES, TEMPLATES, SyntheticConfig
from harness.synthetic.generate import generate_synthetic
from harness.synthetic.pretrain import (
    CLIP_MEAN,
    CLIP_STD,
    checkpoint_path,
    preprocess_frames,
    pretrain_tiny_clip,
)
from harness.synthetic.render import object_phrase, render_distractor_frame, render_object_frame
from harness.synthetic.truth import TRUTH_FILE, load_truth, relevant_frames, relevant_seconds

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "COLORS",
    "K_OBJECTS",
    "SHAPES",
    "TEMPLATES",
    "TRUTH_FILE",
    "SyntheticConfig",
    "checkpoint_path",
    "generate_synthetic",
    "load_truth",
    "object_phrase",
    "preprocess_frames",
    "pretrain_tiny_clip",
    "relevant_frames",
    "relevant_seconds",
    "render_distractor_frame",
    "render_object_frame",
]
