"""Optimiser, parameter groups and learning-rate schedule of the paper protocol (PAPER.md §4.1).

Two optimisers share one schedule and one grouping:

* ``BertAdam``: CLIP4Clip's ``modules/optimization.py`` rule, reproduced exactly for the
  ``reference`` numerics: no bias correction (update = m / (sqrt(v) + eps)), each parameter
  tensor's gradient clipped to ``max_grad_norm`` *inside* the optimiser (after the training
  loop's global clip), weight decay added to the update (update += wd * p; p -= lr_t * update),
  the schedule evaluated per parameter at progress = (steps taken by that tensor) / t_total, and
  the moment buffers created in the parameter's own dtype (fp16 for converted CLIP weights).
* ``torch.optim.AdamW`` (bias-corrected, decoupled weight decay, fused on CUDA) driven by a
  ``LambdaLR`` with the same ``warmup_cosine`` factor: the ``fast`` numerics.

Both start at factor 0 on the very first step (progress 0), exactly as BertAdam does.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

__all__ = [
    "NO_DECAY",
    "BertAdam",
    "build_optimizer",
    "group_lrs",
    "param_groups",
    "warmup_cosine",
]

# CLIP4Clip's rule (main_task_retrieval.py prep_optimizer): a parameter is exempt from weight decay
# when its *name* contains one of these. open_clip names its LayerNorms ln_1/ln_2/ln_final/..., so
# (as in CLIP4Clip, whose CLIP uses the same names) their weights do get decay; biases never do.
NO_DECAY: tuple[str, ...] = ("bias", "LayerNorm.bias", "LayerNorm.weight")


def warmup_cosine(progress: float, warmup: float = 0.1) -> float:
    """CLIP4Clip's ``warmup_cosine``: p/warmup during warm-up, then 0.5(1+cos(pi p)), not re-based."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    coef_lr: float,
    weight_decay: float,
    is_clip: Callable[[str], bool],
) -> list[dict[str, Any]]:
    """Split parameters into {clip, new} x {decay, no_decay} groups (empty groups are dropped).

    CLIP parameters (``is_clip(name)``) train at ``lr * coef_lr``, everything else at ``lr``.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        decay = not any(nd in name for nd in NO_DECAY)
        buckets.setdefault((is_clip(name), decay), []).append(p)
    groups = []
    for clip in (True, False):
        for decay in (True, False):
            params = buckets.get((clip, decay))
            if not params:
                continue
            groups.append({
                "params": params,
                "lr": lr * coef_lr if clip else lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'clip' if clip else 'new'}_{'decay' if decay else 'no_decay'}",
            })
    return groups


class BertAdam(torch.optim.Optimizer):
    """CLIP4Clip's BertAdam (``modules/optimization.py``), scheduled internally.

    Per parameter tensor p with gradient g, state step k (0 on the first update):
        g <- g * min(1, max_grad_norm / ||g||)          (per-tensor clip, in place on p.grad)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        u  = m / (sqrt(v) + e) + weight_decay * p
        p <- p - lr * warmup_cosine(k / t_total, warmup) * u
    All arithmetic happens in p's dtype, as in the original (fp16 weights get fp16 moments).
    ``t_total = -1`` disables the schedule (constant lr).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        *,
        warmup: float = 0.1,
        t_total: int = -1,
        b1: float = 0.9,
        b2: float = 0.98,
        e: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not 0.0 <= warmup < 1.0 and warmup != -1:
            raise ValueError(f"invalid warmup {warmup}; should be in [0, 1)")
        defaults = {"lr": lr, "warmup": warmup, "t_total": t_total, "b1": b1, "b2": b2, "e": e,
                    "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
        super().__init__(params, defaults)

    def scheduled_lr(self, group: dict[str, Any], step: int) -> float:
        if group["t_total"] == -1:
            return group["lr"]
        return group["lr"] * warmup_cosine(step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                next_m, next_v = state["next_m"], state["next_v"]
                if group["max_grad_norm"] > 0:
                    clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad
                next_m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                next_v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = next_m / (next_v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p
                p.add_(-self.scheduled_lr(group, state["step"]) * update)
                state["step"] += 1
        return loss


def build_optimizer(
    kind: str,
    groups: list[dict[str, Any]],
    *,
    t_total: int,
    warmup: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    max_grad_norm: float = 1.0,
    fused: bool = False,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """``kind`` = "bertadam" (schedule inside, returns no scheduler) or "adamw" (+ LambdaLR)."""
    if kind == "bertadam":
        opt = BertAdam(groups, lr=groups[0]["lr"], warmup=warmup, t_total=t_total, b1=betas[0],
                       b2=betas[1], e=eps, max_grad_norm=max_grad_norm)
        return opt, None
    if kind == "adamw":
        kwargs: dict[str, Any] = {"fused": True} if fused else {}
        opt = torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=betas, eps=eps, **kwargs)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step / max(t_total, 1), warmup))
        return opt, sched
    raise ValueError(f"unknown optimizer {kind!r}; choose 'bertadam' or 'adamw'")


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate each group uses on its *next* step, by group name."""
    out: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        name = group.get("name", str(i))
        if isinstance(optimizer, BertAdam):
            steps = [optimizer.state[p]["step"] for p in group["params"] if p in optimizer.state]
            out[name] = optimizer.scheduled_lr(group, max(steps) if steps else 0)
        else:
            out[name] = float(group["lr"])
    return out
