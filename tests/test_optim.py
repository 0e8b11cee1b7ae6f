"""Optimiser, parameter groups and schedule against hand computations (PAPER.md §4.1)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.optim import BertAdam, build_optimizer, group_lrs, param_groups, warmup_cosine


@pytest.mark.parametrize("progress, expected", [
    (0.0, 0.0),
    (0.05, 0.5),                                   # half-way through the 10 % warm-up
    (0.099, 0.99),
    (0.1, 0.5 * (1 + math.cos(0.1 * math.pi))),   # not re-based: 0.9755, not 1.0
    (0.5, 0.5),
    (1.0, 0.0),
])
def test_warmup_cosine_hand_values(progress: float, expected: float) -> None:
    assert warmup_cosine(progress, 0.1) == pytest.approx(expected, abs=1e-12)


def test_adamw_lambda_schedule_matches_formula() -> None:
    p = nn.Parameter(torch.zeros(2))
    groups = [{"params": [p], "lr": 1e-3, "weight_decay": 0.0, "name": "new_decay"}]
    opt, sched = build_optimizer("adamw", groups, t_total=20, warmup=0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    # step k uses lr * f(k / 20); hand values at chosen steps
    assert seen[0] == 0.0
    assert seen[1] == pytest.approx(1e-3 * 0.5)                       # p = 0.05
    assert seen[2] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(0.1 * math.pi)))
    assert seen[10] == pytest.approx(1e-3 * 0.5)                      # p = 0.5
    assert seen[15] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(0.75 * math.pi)))


def test_bertadam_one_step_by_hand() -> None:
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = BertAdam([p], lr=0.5, t_total=-1, b1=0.9, b2=0.98, e=1e-6, weight_decay=0.1,
                   max_grad_norm=1.0)
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)   # norm 5 -> clipped to norm 1
    opt.step()
    coef = 1.0 / (5.0 + 1e-6)                  # torch's clip_grad_norm_: max_norm / (norm + 1e-6)
    g = [3.0 * coef, 4.0 * coef]
    expected = []
    for w, gi in zip([1.0, -2.0], g):
        m = (1 - 0.9) * gi
        v = (1 - 0.98) * gi * gi
        update = m / (math.sqrt(v) + 1e-6) + 0.1 * w       # no bias correction
        expected.append(w - 0.5 * update)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-12)
    # the per-tensor clip is applied to the stored gradient in place
    assert p.grad.tolist() == pytest.approx(g, rel=1e-12)


def test_bertadam_schedule_is_per_tensor_step_and_starts_at_zero() -> None:
    p = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = BertAdam([p], lr=1.0, t_total=10, warmup=0.1, weight_decay=0.0, max_grad_norm=-1)
    p.grad = torch.tensor([1.0, 0.5], dtype=torch.float64)
    opt.step()                                   # progress 0 -> factor 0: no movement
    assert p.detach().tolist() == [1.0, 1.0]
    assert group_lrs(opt)["0"] == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    p.grad = torch.tensor([1.0, 0.5], dtype=torch.float64)
    opt.step()                                   # progress 0.1 -> 0.5(1+cos(0.1 pi))
    f = 0.5 * (1 + math.cos(0.1 * math.pi))
    exp = []
    for g in (1.0, 0.5):
        m = 0.1 * g * 0.9 + 0.1 * g
        v = 0.02 * g * g * 0.98 + 0.02 * g * g
        exp.append(1.0 - f * m / (math.sqrt(v) + 1e-6))
    assert p.detach().tolist() == pytest.approx(exp, rel=1e-12)


def test_bertadam_states_keep_param_dtype() -> None:
    p = nn.Parameter(torch.tensor([0.016, -0.5], dtype=torch.float16))
    opt = BertAdam([p], lr=1e-7, t_total=-1, weight_decay=0.2)
    p.grad = torch.tensor([0.1, 0.2], dtype=torch.float16)
    before = p.detach().clone()
    opt.step()
    st = opt.state[p]
    assert st["next_m"].dtype == torch.float16 and st["next_v"].dtype == torch.float16
    assert p.dtype == torch.float16
    # lr 1e-7 x update ~1 is far below half an fp16 ulp at |w| = 0.016 (7.6e-6): rounded away
    assert torch.equal(p.detach(), before)


def test_bertadam_fp16_second_moment_underflow_amplifies() -> None:
    # g = 1e-3: v = 0.02 g^2 = 2e-8 is below fp16's smallest subnormal (6e-8) and flushes to 0,
    # so the update is m / eps = 1e-4 / 1e-6 = 100 and lr 1e-7 moves the weight by ~1e-5.
    p = nn.Parameter(torch.tensor([0.016], dtype=torch.float16))
    opt = BertAdam([p], lr=1e-7, t_total=-1, weight_decay=0.0)
    p.grad = torch.tensor([1e-3], dtype=torch.float16)
    opt.step()
    assert opt.state[p]["next_v"].item() == 0.0
    assert p.item() != pytest.approx(0.016, abs=1e-6)
    assert p.item() == pytest.approx(0.016 - 1e-7 * 100, abs=8e-6)


def test_param_groups_split_lr_and_decay() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = nn.Linear(2, 2)
            self.ln = nn.LayerNorm(2)
            self.head = nn.Linear(2, 2)
            self.frozen = nn.Parameter(torch.zeros(1), requires_grad=False)

    m = M()
    groups = param_groups(m.named_parameters(), lr=1e-4, coef_lr=1e-3, weight_decay=0.2,
                          is_clip=lambda n: n.startswith("clip."))
    by = {g["name"]: g for g in groups}
    assert set(by) == {"clip_decay", "clip_no_decay", "new_decay", "new_no_decay"}
    assert by["clip_decay"]["lr"] == pytest.approx(1e-7)
    ids = {k: [id(p) for p in g["params"]] for k, g in by.items()}
    assert ids["clip_decay"] == [id(m.clip.weight)]
    assert ids["clip_no_decay"] == [id(m.clip.bias)] and by["clip_no_decay"]["weight_decay"] == 0
    # CLIP4Clip's name rule: "ln.weight" has no "bias"/"LayerNorm" in it, so it decays
    assert set(ids["new_decay"]) == {id(m.ln.weight), id(m.head.weight)}
    assert set(map(id, by["new_no_decay"]["params"])) == {id(m.ln.bias), id(m.head.bias)}
    assert all(m.frozen is not p for g in groups for p in g["params"])
