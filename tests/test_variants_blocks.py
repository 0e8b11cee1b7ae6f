"""Excitation / aggregation blocks against hand computation (PAPER.md §2)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from variants.blocks import AggregationBlock, ExcitationBlock, block_params, hidden_width

RATIOS = [Fraction(6), Fraction(4), Fraction(3), Fraction(2),
          Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(1, 6)]
# PAPER.md §2.4 table, literal numbers: r -> (T'=12, T'=64)
TABLE = {
    Fraction(6): (2, 10), Fraction(4): (3, 16), Fraction(3): (4, 21), Fraction(2): (6, 32),
    Fraction(1, 2): (24, 128), Fraction(1, 3): (36, 192), Fraction(1, 4): (48, 256), Fraction(1, 6): (72, 384),
}


@pytest.mark.parametrize("r", RATIOS)
def test_hidden_width_matches_paper_table(r: Fraction) -> None:
    assert hidden_width(12, r) == TABLE[r][0]
    assert hidden_width(64, r) == TABLE[r][1]


@pytest.mark.parametrize("r", RATIOS)
@pytest.mark.parametrize("t", [12, 64, 7, 32])
def test_hidden_width_equals_authors_float_floor_division(r: Fraction, t: int) -> None:
    authors_ratio = r.numerator / r.denominator  # e.g. 1/3 as a Python float
    assert hidden_width(t, r) == int(t // authors_ratio)


def test_param_counts_from_paper() -> None:
    assert block_params(12, Fraction(4)) == 87
    assert block_params(12, Fraction(1, 4)) == 1212
    for cls in (ExcitationBlock, AggregationBlock):
        assert sum(p.numel() for p in cls(12, Fraction(4)).parameters()) == 87
        assert sum(p.numel() for p in cls(12, Fraction(1, 4)).parameters()) == 1212


def test_hidden_width_below_one_raises() -> None:
    with pytest.raises(ValueError, match="hidden width"):
        ExcitationBlock(4, Fraction(6))
    with pytest.raises(ValueError, match="must not be 1"):
        AggregationBlock(12, Fraction(1))


def _set_params(block, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    w1 = rng.normal(size=(block.hidden, block.num_frames))
    b1 = rng.normal(size=block.hidden)
    w2 = rng.normal(size=(block.num_frames, block.hidden))
    b2 = rng.normal(size=block.num_frames)
    with torch.no_grad():
        block.fc1.weight.copy_(torch.tensor(w1))
        block.fc1.bias.copy_(torch.tensor(b1))
        block.fc2.weight.copy_(torch.tensor(w2))
        block.fc2.bias.copy_(torch.tensor(b2))
    return w1, b1, w2, b2


def _hand_logits(x: np.ndarray, params, ratio: Fraction, mask: np.ndarray | None = None) -> np.ndarray:
    """Explicit loops: squeeze over D, FC, act, FC."""
    w1, b1, w2, b2 = params
    b, t, d = x.shape
    hid = w1.shape[0]
    out = np.zeros((b, t))
    for i in range(b):
        z = [sum(x[i, j, k] for k in range(d)) / d for j in range(t)]
        if mask is not None:
            z = [z[j] * mask[i, j] for j in range(t)]
        h = []
        for u in range(hid):
            a = b1[u] + sum(w1[u, j] * z[j] for j in range(t))
            a = max(a, 0.0)
            if ratio < 1:
                a = min(a, 6.0)
            h.append(a)
        for j in range(t):
            out[i, j] = b2[j] + sum(w2[j, u] * h[u] for u in range(hid))
    return out


@pytest.mark.parametrize("ratio", [Fraction(2), Fraction(1, 2)])
def test_excitation_matches_hand_computation(ratio: Fraction) -> None:
    rng = np.random.default_rng(0)
    blk = ExcitationBlock(4, ratio).double()
    params = _set_params(blk, rng)
    x = rng.normal(size=(2, 4, 3)) * 3
    out, gates = blk(torch.tensor(x))
    logit = _hand_logits(x, params, ratio)
    s = 1 / (1 + np.exp(-logit))
    np.testing.assert_allclose(gates.detach().numpy(), s, rtol=1e-10)
    expect = np.zeros_like(x)
    for i in range(2):
        for j in range(4):
            expect[i, j] = s[i, j] * x[i, j]
    np.testing.assert_allclose(out.detach().numpy(), expect, rtol=1e-10)


@pytest.mark.parametrize("ratio", [Fraction(2), Fraction(1, 2)])
def test_aggregation_matches_hand_computation(ratio: Fraction) -> None:
    rng = np.random.default_rng(1)
    blk = AggregationBlock(4, ratio).double()
    params = _set_params(blk, rng)
    x = rng.normal(size=(3, 4, 5)) * 3
    u, weights = blk(torch.tensor(x))
    logit = _hand_logits(x, params, ratio)
    for i in range(3):
        e = [np.exp(v) for v in logit[i]]
        a = [v / sum(e) for v in e]
        np.testing.assert_allclose(weights[i].detach().numpy(), a, rtol=1e-10)
        expect = sum(a[j] * x[i, j] for j in range(4))
        np.testing.assert_allclose(u[i].detach().numpy(), expect, rtol=1e-10)


def test_activation_follows_ratio_relu6_clips_expansion() -> None:
    # Pre-activation 10 everywhere: ReLU passes 10, ReLU6 clips to 6.
    for ratio, cap in ((Fraction(2), 10.0), (Fraction(1, 2), 6.0)):
        blk = ExcitationBlock(4, ratio)
        with torch.no_grad():
            blk.fc1.weight.zero_()
            blk.fc1.bias.fill_(10.0)
        h = blk.act(blk.fc1(torch.zeros(1, 4)))
        assert torch.allclose(h, torch.full_like(h, cap))
    assert isinstance(ExcitationBlock(12, Fraction(4)).act, torch.nn.ReLU)
    assert isinstance(AggregationBlock(12, Fraction(1, 4)).act, torch.nn.ReLU6)


def test_init_is_normal_002_zero_bias_and_uniform_start() -> None:
    torch.manual_seed(0)
    blk = AggregationBlock(64, Fraction(1, 6))
    w = blk.fc1.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002
    assert float(blk.fc1.bias.detach().abs().max()) == 0.0 and float(blk.fc2.bias.detach().abs().max()) == 0.0
    x = torch.randn(4, 64, 16)
    _, weights = blk(x)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 64), atol=2e-3)
    _, gates = ExcitationBlock(64, Fraction(4))(x)
    assert torch.allclose(gates, torch.full_like(gates, 0.5), atol=0.02)


def test_unmasked_blocks_give_padded_frames_weight() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=torch.float)
    _, w = AggregationBlock(6, Fraction(2))(x, mask)
    assert float(w[0, 3:].detach().min()) > 0  # authors' code: softmax over all T positions


def test_masked_blocks_zero_padded_frames_exactly() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=torch.float)
    agg = AggregationBlock(6, Fraction(2), masked=True)
    exc = ExcitationBlock(6, Fraction(1, 2), masked=True)
    u, w = agg(x, mask)
    assert torch.equal(w[0, 3:], torch.zeros(3))
    assert torch.allclose(w.sum(-1), torch.ones(2))
    assert torch.allclose(u[0], (w[0, :3, None] * x[0, :3]).sum(0))
    out, g = exc(x, mask)
    assert torch.equal(g[0, 3:], torch.zeros(3)) and torch.equal(out[0, 3:], torch.zeros(3, 8))
    # the squeeze sees 0 at padded positions: their content cannot change the valid outputs
    x2 = x.clone()
    x2[0, 3:] = 100.0
    assert torch.allclose(agg(x2, mask)[1], w) and torch.allclose(exc(x2, mask)[1], g)
    # a video without any valid frame gives zero weights, not NaN
    _, w0 = agg(x, torch.zeros(2, 6))
    assert torch.equal(w0, torch.zeros(2, 6))
