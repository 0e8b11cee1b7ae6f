"""Temporal modules of CLIP4Clip (PAPER.md §1.3): seqLSTM, seqTransf and the tight cross encoder.

The transformer blocks use OpenAI CLIP's key layout (``ln_1``, ``attn.in_proj_weight``,
``attn.in_proj_bias``, ``attn.out_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``) so the
state dicts of CLIP text resblocks 0..3 load directly, as CLIP4Clip's ``init_preweight`` does.
Attention is fused (``scaled_dot_product_attention``) with CLIP4Clip's additive key mask
``(1 - mask) * -1e6``; no causal mask.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from variants.blocks import INIT_STD, init_linear_

CONTEXT_LENGTH = 77  # size of CLIP's text positional embedding table (also CLIP4Clip's cross table)
NUM_LAYERS = 4  # seqTransf / cross encoder depth (CLIP text layers 0..3)
MASK_VALUE = -1e6  # CLIP4Clip's additive attention mask value
# CLIP4Clip's own LayerNorm (until_module.py, TF style) in transformerClip, the cross encoder and
# its pooler; CLIP's blocks keep PyTorch's 1e-5 (PAPER.md §4.3).
LN_EPS = 1e-12


@dataclass(frozen=True)
class TextTowerInit:
    """CLIP text-tower tensors that initialise seqTransf / tightTransf (PAPER §1.5).

    positional_embedding: [77, D]; resblocks: state dicts of text resblocks 0..3 in OpenAI key
    layout; heads: attention heads of the text tower (8 for ViT-B/32).
    """

    positional_embedding: Tensor
    resblocks: Sequence[dict[str, Tensor]] = field(default_factory=list)
    heads: int = 8


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, fused kernel."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        if not self.in_proj_weight.is_meta:
            nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's own init

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        h = self.heads
        q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
        attn_mask = None
        if key_mask is not None:
            # Additive key mask (1 - m) * -1e6 (clamped to the dtype's range under autocast).
            fill = max(MASK_VALUE, torch.finfo(q.dtype).min)
            attn_mask = ((1.0 - key_mask.to(q.dtype)) * fill)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-LN block: x + attn(ln_1(x)); x + mlp(ln_2(x)) with a QuickGELU 4x MLP.

    LayerNorm eps 1e-12 as in CLIP4Clip's ``module_cross`` copy of the block.
    """

    def __init__(self, width: int, heads: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                 ("c_proj", nn.Linear(width * 4, width))]
            )
        )

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_mask)
        return x + self.mlp(self.ln_2(x))


class TransformerClip(nn.Module):
    """``transformerClip`` / the cross transformer: a stack of ResidualAttentionBlocks (batch-first)."""

    def __init__(self, width: int, layers: int, heads: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, eps) for _ in range(layers))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        for block in self.resblocks:
            x = block(x, key_mask)
        return x

    def load_text_init(self, resblocks: Sequence[dict[str, Tensor]]) -> None:
        if len(resblocks) < len(self.resblocks):
            raise ValueError(
                f"TextTowerInit.resblocks has {len(resblocks)} layers; {len(self.resblocks)} are needed"
            )
        for block, state in zip(self.resblocks, resblocks):
            block.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)


def _position_table(embed_dim: int) -> nn.Embedding:
    """nn.Embedding(77, D) without its default N(0, 1) init: init_linear_ overwrites it with
    N(0, 0.02) anyway, and skipping it keeps shape-only ("meta") builds fast."""
    return nn.Embedding(CONTEXT_LENGTH, embed_dim, _weight=torch.empty(CONTEXT_LENGTH, embed_dim))


def _heads(embed_dim: int, text_init: TextTowerInit | None) -> int:
    return text_init.heads if text_init is not None else max(1, embed_dim // 64)


def _load_positions(table: nn.Embedding, text_init: TextTowerInit | None) -> None:
    if text_init is None:
        return
    pos = text_init.positional_embedding
    if tuple(pos.shape) != tuple(table.weight.shape):
        raise ValueError(
            f"TextTowerInit.positional_embedding has shape {tuple(pos.shape)}, "
            f"expected {tuple(table.weight.shape)}"
        )
    with torch.no_grad():
        table.weight.copy_(pos)


class SeqLSTM(nn.Module):
    """S(X) = LSTM(X) + X over the packed valid frames (CLIP4Clip ``seqLSTM``).

    Positions beyond the batch's longest valid length are filled with the input features before
    the residual (so they become 2X there), exactly as CLIP4Clip.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.lstm_visual = nn.LSTM(embed_dim, embed_dim, num_layers=1, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(dim=-1).long().clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm_visual(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=None)
        out = torch.cat((out, x[:, out.size(1):]), dim=1)
        return out + x


class SeqTransf(nn.Module):
    """S(X) = TransformerClip(X + P[0:T]) + X (CLIP4Clip ``seqTransf``)."""

    def __init__(self, embed_dim: int, text_init: TextTowerInit | None = None) -> None:
        super().__init__()
        self.frame_position_embeddings = _position_table(embed_dim)
        self.transformerClip = TransformerClip(embed_dim, NUM_LAYERS, _heads(embed_dim, text_init))
        self.apply(init_linear_)
        _load_positions(self.frame_position_embeddings, text_init)
        if text_init is not None:
            self.transformerClip.load_text_init(text_init.resblocks)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        t = x.size(1)
        if t > CONTEXT_LENGTH:
            raise ValueError(f"seqTransf supports at most {CONTEXT_LENGTH} frames, got {t}")
        h = x + self.frame_position_embeddings.weight[:t].to(x.dtype)
        return self.transformerClip(h, mask) + x


class CrossEncoder(nn.Module):
    """CLIP4Clip ``CrossModel`` + ``similarity_dense`` (tightTransf): [text; frames] -> logit.

    Position embeddings (table 77, CLIP-initialised) + dropout 0.1 -> 4 CLIP blocks with the
    concat key mask -> pooler (LayerNorm, token 0, Linear, QuickGELU) -> Linear(D, 1).
    """

    def __init__(self, embed_dim: int, text_init: TextTowerInit | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.position_embeddings = _position_table(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.transformer = TransformerClip(embed_dim, NUM_LAYERS, _heads(embed_dim, text_init))
        self.ln_pool = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.act = QuickGELU()
        self.similarity_dense = nn.Linear(embed_dim, 1)
        self.apply(init_linear_)
        _load_positions(self.position_embeddings, text_init)
        if text_init is not None:
            self.transformer.load_text_init(text_init.resblocks)

    def forward(self, text: Tensor, frames: Tensor, mask: Tensor) -> Tensor:
        """text [P, D], frames [P, T, D], mask [P, T] for P pairs -> logits [P]."""
        x = torch.cat((text.unsqueeze(1), frames), dim=1)
        n = x.size(1)
        if n > CONTEXT_LENGTH:
            raise ValueError(f"tightTransf supports at most {CONTEXT_LENGTH - 1} frames, got {n - 1}")
        key_mask = torch.cat((mask.new_ones(mask.size(0), 1), mask), dim=1)
        x = self.dropout(x + self.position_embeddings.weight[:n].to(x.dtype))
        x = self.transformer(x, key_mask)
        pooled = self.act(self.dense(self.ln_pool(x)[:, 0]))
        return self.similarity_dense(pooled).squeeze(-1)


__all__ = [
    "CONTEXT_LENGTH",
    "INIT_STD",
    "LN_EPS",
    "CrossEncoder",
    "QuickGELU",
    "ResidualAttentionBlock",
    "SeqLSTM",
    "SeqTransf",
    "TextTowerInit",
    "TransformerClip",
]
