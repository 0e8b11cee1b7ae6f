"""CLIP architecture names: OpenAI's aliases, the tiny test CLIP, and what checkpoint each expects.

``eabench-tiny`` is a tiny CLIP (width 64, 32 px images) for tests and the synthetic benchmark.
Its architecture is an open_clip model config shipped as data (``model_configs/eabench-tiny.json``)
and registered through open_clip's public ``add_model_config`` when the name is first resolved,
never at import. Its text width equals ``embed_dim`` so seqTransf/tightTransf can initialise from
the text blocks (as with ViT-B/32: 512 == 512), and it has 4 text layers because those heads copy
text blocks 0..3.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_ALIASES",
    "TINY_CLIP",
    "TINY_CLIP_CONFIG",
    "TINY_CLIP_CONFIG_FILE",
    "expected_checkpoint",
    "register_tiny_clip",
    "resolve_model_name",
]

TINY_CLIP = "eabench-tiny"

# open_clip names a config by its file stem, so the file is called after the model.
TINY_CLIP_CONFIG_FILE = Path(__file__).resolve().parent / "model_configs" / f"{TINY_CLIP}.json"
TINY_CLIP_CONFIG: dict[str, Any] = json.loads(TINY_CLIP_CONFIG_FILE.read_text(encoding="utf-8"))

# OpenAI's names (as in CLIP4Clip's ``--pretrained_clip_name``) → open_clip configs with QuickGELU,
# the activation OpenAI's weights were trained with.
MODEL_ALIASES: dict[str, str] = {
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}


def register_tiny_clip() -> None:
    """Make ``eabench-tiny`` known to open_clip (idempotent)."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(TINY_CLIP_CONFIG_FILE)


def resolve_model_name(model_name: str) -> str:
    """The open_clip name of ``model_name`` (OpenAI aliases resolved; the tiny CLIP registered)."""
    name = MODEL_ALIASES.get(model_name, model_name)
    if name == TINY_CLIP:
        register_tiny_clip()
    return name


def expected_checkpoint(model_name: str) -> str:
    """What a checkpoint for ``model_name`` looks like, for error messages."""
    if model_name == TINY_CLIP:
        return (f"an {TINY_CLIP} checkpoint (safetensors or state dict) such as "
                f"<data root>/clip/{TINY_CLIP}.safetensors written by `eabench data synthetic`")
    if model_name.startswith("ViT-B-32"):
        return ("an OpenAI CLIP ViT-B/32 checkpoint such as ViT-B-32.pt (TorchScript) or an "
                f"open_clip state dict for {model_name}")
    return f"an OpenAI/open_clip checkpoint for {model_name}"
