"""Helpers for the variants tests (imported explicitly; not a pytest conftest)."""
from __future__ import annotations

import torch

from variants import TextTowerInit


def random_text_init(dim: int, heads: int = 2, layers: int = 4, seed: int = 0) -> TextTowerInit:
    """A TextTowerInit with random tensors in OpenAI CLIP's resblock key layout."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    blocks = []
    for _ in range(layers):
        blocks.append({
            "ln_1.weight": 1 + r(dim), "ln_1.bias": r(dim),
            "attn.in_proj_weight": r(3 * dim, dim), "attn.in_proj_bias": r(3 * dim),
            "attn.out_proj.weight": r(dim, dim), "attn.out_proj.bias": r(dim),
            "ln_2.weight": 1 + r(dim), "ln_2.bias": r(dim),
            "mlp.c_fc.weight": r(4 * dim, dim), "mlp.c_fc.bias": r(4 * dim),
            "mlp.c_proj.weight": r(dim, 4 * dim), "mlp.c_proj.bias": r(dim),
        })
    return TextTowerInit(positional_embedding=r(77, dim, scale=0.01), resblocks=blocks, heads=heads)


def padded_mask(batch: int, frames: int) -> torch.Tensor:
    """Mask where some videos are padded (lengths frames, frames//2, 3, 1, frames, ...)."""
    lengths = [frames, frames // 2, min(3, frames), 1]
    m = torch.zeros(batch, frames)
    for i in range(batch):
        m[i, : lengths[i % len(lengths)]] = 1
    return m
