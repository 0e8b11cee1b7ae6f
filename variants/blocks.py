"""Excitation E_r and aggregation A_r over the frame axis (PAPER.md §2), exactly as the authors.

Both blocks squeeze a [B, T, D] tensor to one scalar per frame (mean over D), pass it through
FC T->T' -> act -> FC T'->T and turn the result into per-frame gates (sigmoid, excitation) or
pooling weights (softmax, aggregation). By default padded frames are *not* masked (the authors'
code); ``masked=True`` is our option: padded frames get gate 0 / weight 0.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor, nn

INIT_STD = 0.02  # CLIP4Clip initializer_range (PAPER §1.5)


def hidden_width(num_frames: int, ratio: Fraction | int) -> int:
    """T' = int(T // r) as the authors compute it with Python floats (PAPER §2.4).

    Computed exactly as floor(T / r) on Fractions; ``tests`` check this equals the float
    floor-division of the authors' code for every ratio used (2, 3, 4, 6, 1/2, 1/3, 1/4, 1/6) at
    T = 12 and 64.
    """
    r = Fraction(ratio)
    if r <= 0:
        raise ValueError(f"reduction ratio must be positive, got {r}")
    return math.floor(Fraction(num_frames) / r)


def init_linear_(module: nn.Module) -> None:
    """CLIP4Clip ``init_weights``: Linear/Embedding ~ N(0, 0.02), bias 0, LayerNorm (1, 0)."""
    if any(p.is_meta for p in module.parameters(recurse=False)):
        return  # shape-only build (device "meta"): init on meta goes through slow reference ops
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class _FrameBottleneck(nn.Module):
    """Squeeze (mean over D) + FC T->T' + (ReLU | ReLU6) + FC T'->T, giving [B, T] logits."""

    def __init__(self, num_frames: int, ratio: Fraction | int, masked: bool = False) -> None:
        super().__init__()
        self.num_frames = int(num_frames)
        self.ratio = Fraction(ratio)
        if self.ratio == 1:
            raise ValueError("reduction ratio must not be 1 (squeeze r > 1, expansion r < 1)")
        self.hidden = hidden_width(self.num_frames, self.ratio)
        if self.hidden < 1:
            raise ValueError(
                f"hidden width int({self.num_frames} // {self.ratio}) = {self.hidden} < 1; "
                "use more frames or a smaller squeeze ratio"
            )
        self.masked = bool(masked)
        self.fc1 = nn.Linear(self.num_frames, self.hidden)
        # The activation follows the block's own ratio: ReLU for squeeze, ReLU6 for expansion.
        self.act: nn.Module = nn.ReLU() if self.ratio > 1 else nn.ReLU6()
        self.fc2 = nn.Linear(self.hidden, self.num_frames)
        self.apply(init_linear_)

    def logits(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if x.dim() != 3 or x.size(1) != self.num_frames:
            raise ValueError(f"expected frames [B, {self.num_frames}, D], got {tuple(x.shape)}")
        z = x.mean(dim=-1)  # squeeze over the feature dimension: [B, T]
        if self.masked and mask is not None:
            z = z * mask.to(z.dtype)  # padded frames contribute 0 to the squeeze
        return self.fc2(self.act(self.fc1(z)))

    def extra_repr(self) -> str:
        return f"T={self.num_frames}, r={self.ratio}, hidden={self.hidden}, masked={self.masked}"


class ExcitationBlock(_FrameBottleneck):
    """E_r: X_i -> s_i X_i with s = sigmoid(W2 act(W1 z + b1) + b2). Returns (X~, gates[B,T])."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        gates = torch.sigmoid(self.logits(x, mask))
        if self.masked and mask is not None:
            gates = gates * mask.to(gates.dtype)
        return x * gates.unsqueeze(-1), gates


class AggregationBlock(_FrameBottleneck):
    """A_r: u = sum_i a_i X_i with a = softmax_T(...). Returns (u[B,D], weights[B,T])."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits = self.logits(x, mask)
        if self.masked and mask is not None:
            valid = mask > 0
            # finfo.min (not -inf) keeps rows without any valid frame finite; * mask makes the
            # padded weights exactly 0 either way.
            logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
            weights = torch.softmax(logits, dim=-1) * valid.to(logits.dtype)
        else:
            weights = torch.softmax(logits, dim=-1)
        return torch.einsum("btd,bt->bd", x, weights), weights


def block_params(num_frames: int, ratio: Fraction | int) -> int:
    """Parameters of one E or A block: T*T' + T' + T'*T + T (PAPER §2.4)."""
    h = hidden_width(num_frames, ratio)
    return 2 * num_frames * h + h + num_frames
