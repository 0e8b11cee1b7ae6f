"""torch.distributed helpers: torchrun-compatible setup and CLIP4Clip's feature all-gather.

Launch with ``torchrun --nproc-per-node N -m harness.cli train ...`` (env:// rendezvous). The
global batch (``batch_size``) is split evenly over ranks; loose types gather text features,
video outputs and masks so the loss sees the whole global batch (PAPER.md §1.4).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "AllGather",
    "DistInfo",
    "all_gather_with_grad",
    "all_reduce_flag",
    "barrier",
    "broadcast_object",
    "cleanup",
    "dist_info",
    "init_from_env",
    "scale_grad",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device: str = "cpu") -> DistInfo:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1).

    Returns the rank layout; a no-op for single-process runs or when already initialised.
    NCCL on CUDA, gloo on CPU.
    """
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return dist_info()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class AllGather(torch.autograd.Function):
    """All-gather along dim 0 whose backward keeps only this rank's slice of the gradient.

    This is CLIP4Clip's ``AllGather`` with one deliberate difference: the returned slice is
    multiplied by the world size W. Every rank computes the *same* loss L on the gathered global
    batch, so dL/d(local features) on rank r is the full single-process gradient for the rows r
    owns. DDP then *averages* parameter gradients over ranks, i.e. divides the sum of per-rank
    contributions by W; scaling by W here cancels that, so one DDP step on a global batch of B
    equals one single-process step on the same B (tested on gloo). Parameters used only after
    the gather (the head's post-gather modules, logit_scale) see identical full gradients on every
    rank and are unaffected by the scaling. CLIP4Clip itself does not scale (its upstream
    gradients are 1/W of the single-process ones; Adam is nearly invariant to that, but the
    gradient clip and eps are not).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.world = world
        ctx.batch = tensor.shape[0]
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        lo = ctx.batch * ctx.rank
        return grad[lo:lo + ctx.batch] * ctx.world


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` in backward."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """``tensor`` unchanged, but everything upstream of it receives ``scale`` x the gradient.

    Placed in front of the feature all-gather it reproduces what G DDP ranks compute with
    CLIP4Clip's ``AllGather`` (local slice in backward, then DDP's 1/G average): every module
    before the gather gets 1/G of the global loss's gradient (PAPER.md §4.3).
    """
    if scale == 1.0 or not tensor.requires_grad:
        return tensor
    return _ScaleGrad.apply(tensor, scale)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Gather across ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return AllGather.apply(tensor)


def all_reduce_flag(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a non-finite loss anywhere)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
