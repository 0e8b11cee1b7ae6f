"""Every catalog entry on the real tiny CLIP: built from its text tower, trained one step end to end.

The variants tests use random tensors in CLIP's key layout; this one goes through
``harness.backbone`` (open_clip model, ``text_init``, ``logit_scale_init``) and the tokenizer, so
a head that cannot take a real CLIP's initialisation or gradients fails here.
"""
from __future__ import annotations

import math

import pytest
import torch

from harness.backbone import TINY_CLIP, load_clip
from harness.text import tokenize
from variants import build_head, get_variant, list_variants, symmetric_infonce


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return load_clip(TINY_CLIP, None, allow_random=True)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return tokenize(["a red circle", "a blue square and then a cat", "nothing at all"], max_words=32)


@pytest.mark.parametrize("frames", [12, 64])
def test_every_catalog_entry_trains_a_step_on_the_tiny_clip(clip, tokens: torch.Tensor, frames: int) -> None:  # type: ignore[no-untyped-def]
    names = list_variants("*")
    assert len(names) >= 100  # every paper row and its masked twin
    text_init = clip.text_init(4)
    gen = torch.Generator().manual_seed(frames)
    pixels = torch.randn(3, frames, 3, clip.image_size, clip.image_size, generator=gen)
    mask = torch.ones(3, frames)
    mask[1, frames // 2:] = 0  # a short video
    mask[2, 3:] = 0            # a very short one
    pixels = pixels * mask[..., None, None, None]  # padded frames are zero, as in CLIP4Clip
    for name in names:
        spec = get_variant(name).spec
        head = build_head(spec, num_frames=frames, embed_dim=clip.embed_dim, text_init=text_init,
                          logit_scale_init=clip.logit_scale_init)
        clip.zero_grad(set_to_none=True)
        feats = clip.encode_frames(pixels)
        text = clip.encode_text(tokens)
        assert feats.shape == (3, frames, clip.embed_dim)
        logits = head.similarity(text, feats, mask)
        assert logits.shape == (3, 3), name
        loss = symmetric_infonce(logits)
        assert math.isfinite(loss.item()), name
        loss.backward()
        # gradient reaches both CLIP towers and every trainable part of the head
        assert clip.model.visual.conv1.weight.grad is not None, name
        assert clip.model.token_embedding.weight.grad is not None, name
        missing = [n for n, p in head.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, (name, missing)
