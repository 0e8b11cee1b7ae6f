"""The CLIP backbone: an open_clip model loaded offline from a local checkpoint file.

CLIP4Clip fine-tunes OpenAI's CLIP ViT-B/32 (PAPER.md §1.2). We build the network with
``open_clip`` (whose ``CLIP`` class keeps OpenAI's parameter names, DATASETS.md §5.1) and load
the weights ourselves from any format a CLIP4Clip user has on disk (:mod:`harness.clip_files`).
Architecture names, OpenAI's aliases and the tiny test CLIP ``eabench-tiny`` (registered with
open_clip when first loaded, never at import) live in :mod:`harness.clip_models`; both modules'
public names are re-exported here.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from harness.clip_files import (
    SAVE_FORMATS,
    check_fits,
    detect_format,
    file_sha256,
    read_state_dict,
    write_state_dict,
)
from harness.clip_models import (
    MODEL_ALIASES,
    TINY_CLIP,
    TINY_CLIP_CONFIG,
    expected_checkpoint,
    register_tiny_clip,
    resolve_model_name,
)
from harness.errors import CheckpointError

if TYPE_CHECKING:  # variants/ is pure model code; imported lazily at call time
    from variants import TextTowerInit

__all__ = [
    "MODEL_ALIASES",
    "SAVE_FORMATS",
    "TINY_CLIP",
    "TINY_CLIP_CONFIG",
    "ClipBackbone",
    "clip_on_meta",
    "detect_format",
    "file_sha256",
    "load_clip",
    "register_tiny_clip",
    "resolve_model_name",
    "save_clip",
]


class ClipBackbone(nn.Module):
    """An open_clip ``CLIP`` with CLIP4Clip's frame and text encoders on top."""

    def __init__(self, model: nn.Module, model_name: str, weights_sha256: str | None,
                 logit_scale_init: float) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.weights_sha256 = weights_sha256
        self.logit_scale_init = float(logit_scale_init)
        size = model.visual.image_size
        self.image_size: int = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.embed_dim: int = int(model.text_projection.shape[1])
        self.context_length: int = int(model.context_length)
        self.text_heads: int = int(model.transformer.resblocks[0].attn.num_heads)

    def encode_frames(self, pixels: Tensor) -> Tensor:
        """[B, T, 3, H, W] normalised pixels → [B, T, D] fp32 frame features (CLS → ln_post → proj)."""
        if pixels.dim() != 5:
            raise ValueError(f"encode_frames expects [B, T, 3, H, W], got {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        feats = self.model.encode_image(pixels.reshape(b * t, *pixels.shape[2:]))
        return feats.float().reshape(b, t, -1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """[B, L] token ids (L ≤ 77, zero padded) → [B, D] fp32 features at the EOT position.

        Like CLIP4Clip the positional table and causal mask are sliced to L (open_clip's own
        encode_text only accepts L == 77). The mask is causal, so the EOT output does not depend
        on what follows it: any zero padding length gives the same feature.
        """
        m = self.model
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens exceeds the context length {self.context_length}")
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # EOT = largest id
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return x.float()

    def text_init(self, layers: int = 4) -> TextTowerInit:
        """Positional table and text blocks 0..layers-1 (OpenAI keys) for seqTransf/tightTransf."""
        try:  # lazily: variants/ must not be needed to load CLIP
            from variants import TextTowerInit
        except ImportError:  # the package root may not re-export it yet
            from variants.temporal import TextTowerInit

        blocks = self.model.transformer.resblocks
        if layers > len(blocks):
            raise ValueError(f"{self.model_name} has {len(blocks)} text layers, {layers} requested")
        resblocks = [{k: v.detach().clone() for k, v in blocks[i].state_dict().items()}
                     for i in range(layers)]
        return TextTowerInit(
            positional_embedding=self.model.positional_embedding.detach().clone(),
            resblocks=resblocks, heads=self.text_heads)

    def clip_parameters(self) -> Iterator[nn.Parameter]:
        """CLIP's own parameters (they train at lr × coef_lr)."""
        return self.model.parameters()

    def forward(self, pixels: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_frames(pixels), self.encode_text(tokens)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("No pretrained weights loaded"):
            return False
        # open_clip narrates every model build at INFO on the root logger; that is noise in a
        # study that builds the model once per trial.
        return not (record.levelno <= logging.INFO and "open_clip" in record.pathname)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip warns "No pretrained weights loaded" on the root logger whenever pretrained=None;
    we load the weights ourselves right after, so the notice is misleading. Its INFO narration of
    the build is dropped too."""
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def load_clip(model_name: str, weights: Path | str | None = None, *, device: str | torch.device = "cpu",
              allow_random: bool = False) -> ClipBackbone:
    """Build ``model_name`` with open_clip and load ``weights`` (any supported format), offline.

    ``weights=None`` gives a random initialisation: allowed for the tiny model, otherwise only with
    ``allow_random=True`` (a random ViT-B/32 is never what a user wants by accident).
    """
    import open_clip

    name = resolve_model_name(model_name)
    if name not in open_clip.list_models():
        raise CheckpointError(
            f"unknown CLIP architecture {model_name!r}; use {TINY_CLIP!r}, 'ViT-B/32' "
            f"(= ViT-B-32-quickgelu) or another open_clip model name")
    if weights is None and not (name == TINY_CLIP or allow_random):
        raise CheckpointError(
            f"no CLIP weights given for {name}; expected {expected_checkpoint(name)}. Fix: pass the file "
            f"(e.g. --weights /path/ViT-B-32.pt); random initialisation needs allow_random=True")
    sd: dict[str, Tensor] | None = None
    sha = None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"{path}: CLIP checkpoint not found; expected {expected_checkpoint(name)}. Fix: give the path "
                f"of the file (CLIP4Clip users have it at modules/ViT-B-32.pt)")
        sd, _fmt = read_state_dict(path, name)  # read first: a bad file fails before a big build
    with _quiet_open_clip():
        model = open_clip.create_model(name, pretrained=None, device="cpu")
    if sd is not None:
        if "logit_scale" in sd and sd["logit_scale"].shape != model.logit_scale.shape:
            sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
        check_fits(sd, model, path, name)
        # OpenAI stores fp16; we hold fp32 master weights (mixed precision is the engine's job).
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
        sha = file_sha256(path)
    model = model.float().eval()
    logit_scale = float(model.logit_scale.detach().reshape(-1)[0])
    return ClipBackbone(model, name, sha, logit_scale).to(device)


def clip_on_meta(model_name: str) -> ClipBackbone:
    """The architecture of ``model_name`` on PyTorch's ``meta`` device: every parameter's name and
    shape, no memory, no weights read (``eabench train --dry-run``). The logit scale is CLIP's
    initial ln(100)."""
    import open_clip

    name = resolve_model_name(model_name)
    with _quiet_open_clip(), torch.device("meta"):
        model = open_clip.create_model(name, pretrained=None, device="meta")
    return ClipBackbone(model, name, None, math.log(100.0))


def save_clip(backbone: ClipBackbone, path: Path | str, fmt: str = "safetensors") -> Path:
    """Write the CLIP weights as ``openai-jit`` (TorchScript archive with OpenAI keys and the
    ``input_resolution``/``context_length``/``vocab_size`` extras, like ``ViT-B-32.pt``),
    ``state-dict`` (torch.save) or ``safetensors``."""
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt must be one of {SAVE_FORMATS}, got {fmt!r}")
    sd = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    extras = None
    if fmt == "openai-jit":
        extras = {
            "input_resolution": torch.tensor(backbone.image_size),
            "context_length": torch.tensor(backbone.context_length),
            "vocab_size": torch.tensor(int(backbone.model.vocab_size)),
        }
    return write_state_dict(sd, Path(path), fmt, model_name=backbone.model_name, jit_extras=extras)
