"""seqTransf and the tight cross encoder with CLIP4Clip's LayerNorm eps 1e-12 (PAPER.md §4.3).

The expected outputs come from a float64 re-derivation written here with plain tensor ops (no
nn.LayerNorm, no scaled_dot_product_attention): pre-LN blocks, additive key mask (1 - m) * -1e6,
QuickGELU MLP, the residual around seqTransf, and the cross encoder's pooler. Inputs are scaled
down (as features are after small excitation gates) so that the LayerNorm eps matters: the
same derivation with PyTorch's default 1e-5 is far off, so the test tells the two apart.
"""
from __future__ import annotations

import math

import torch

from variants.temporal import CrossEncoder, SeqTransf

D, T, HEADS = 128, 5, 2  # the module picks D // 64 heads without a CLIP text tower


def _ln(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _block(x: torch.Tensor, sd: dict[str, torch.Tensor], key_mask: torch.Tensor, eps: float) -> torch.Tensor:
    b, n, d = x.shape
    h = _ln(x, sd["ln_1.weight"], sd["ln_1.bias"], eps)
    qkv = h @ sd["attn.in_proj_weight"].T + sd["attn.in_proj_bias"]
    q, k, v = (t.reshape(b, n, HEADS, d // HEADS).transpose(1, 2) for t in qkv.split(d, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // HEADS) + ((1 - key_mask) * -1e6)[:, None, None, :]
    att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = x + att @ sd["attn.out_proj.weight"].T + sd["attn.out_proj.bias"]
    h = _ln(x, sd["ln_2.weight"], sd["ln_2.bias"], eps)
    h = h @ sd["mlp.c_fc.weight"].T + sd["mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd["mlp.c_proj.weight"].T + sd["mlp.c_proj.bias"]


def _stack(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, key_mask: torch.Tensor,
           eps: float) -> torch.Tensor:
    for i in range(4):
        block = {k[len(f"{prefix}.resblocks.{i}."):]: v for k, v in sd.items()
                 if k.startswith(f"{prefix}.resblocks.{i}.")}
        x = _block(x, block, key_mask, eps)
    return x


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, T, D, generator=g) * 1e-4).double()
    mask = torch.ones(3, T, dtype=torch.float64)
    mask[1, 3:] = 0
    return x, mask


def _small_positions(module: torch.nn.Module, table: str) -> None:
    with torch.no_grad():  # positions at the features' scale, so the LayerNorm input is tiny
        getattr(module, table).weight.mul_(1e-3)


def test_seq_transf_forward_matches_float64_derivation() -> None:
    torch.manual_seed(0)
    m = SeqTransf(D).double().eval()
    _small_positions(m, "frame_position_embeddings")
    x, mask = _inputs()
    sd = m.state_dict()

    def expected(eps: float) -> torch.Tensor:
        h = x + sd["frame_position_embeddings.weight"][:T]
        return _stack(h, sd, "transformerClip", mask, eps) + x

    with torch.no_grad():
        got = m(x, mask)
    torch.testing.assert_close(got, expected(1e-12), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(got, expected(1e-5), rtol=1e-3, atol=0)  # the eps is what is tested


def test_cross_encoder_forward_matches_float64_derivation() -> None:
    torch.manual_seed(1)
    m = CrossEncoder(D).double().eval()
    _small_positions(m, "position_embeddings")
    frames, mask = _inputs()
    text = (torch.randn(3, D, generator=torch.Generator().manual_seed(4)) * 1e-4).double()
    sd = m.state_dict()

    def expected(eps: float) -> torch.Tensor:
        x = torch.cat([text[:, None], frames], dim=1) + sd["position_embeddings.weight"][:T + 1]
        key_mask = torch.cat([torch.ones(3, 1, dtype=torch.float64), mask], dim=1)
        x = _stack(x, sd, "transformer", key_mask, eps)
        pooled = _ln(x, sd["ln_pool.weight"], sd["ln_pool.bias"], eps)[:, 0]
        pooled = pooled @ sd["dense.weight"].T + sd["dense.bias"]
        pooled = pooled * torch.sigmoid(1.702 * pooled)
        return (pooled @ sd["similarity_dense.weight"].T + sd["similarity_dense.bias"]).squeeze(-1)

    with torch.no_grad():
        got = m(text, frames, mask)
    torch.testing.assert_close(got, expected(1e-12), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(got, expected(1e-5), rtol=1e-3, atol=0)
