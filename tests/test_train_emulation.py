"""Emulated GPU count (PAPER.md §4.3) against a real gloo DDP run of CLIP4Clip's own computation.

The reference side is written here, independently of ``RetrievalModel``: G processes, each with
its share of the batch, an all-gather whose backward keeps only the local slice (CLIP4Clip's
``AllGather``, unscaled), the global symmetric loss for loose heads or the local one for the tight
head, and DDP averaging the gradients. One process of ours with ``emulate_gpus=G`` must compute
the same loss and the same gradient for every parameter.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

G, T, B = 2, 4, 8


class C4CAllGather(torch.autograd.Function):
    """CLIP4Clip ``modules/until_module.py: AllGather``: gather in forward, local slice in backward."""

    @staticmethod
    def forward(ctx, tensor):  # type: ignore[no-untyped-def]
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor)
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad[ctx.batch * ctx.rank: ctx.batch * (ctx.rank + 1)]


class C4CModel(nn.Module):
    """CLIP4Clip's forward on one GPU (modeling.py: get_similarity_logits + CrossEn loss)."""

    def __init__(self, clip: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.clip, self.head = clip, head

    def forward(self, pixels, mask, tokens):  # type: ignore[no-untyped-def]
        from variants import symmetric_infonce

        frames, text = self.clip.encode_frames(pixels), self.clip.encode_text(tokens)
        if not self.head.loose:  # tightTransf: no gather, the loss of the local batch
            return symmetric_infonce(self.head.similarity(text, frames, mask))
        local = self.head.video_local(frames, mask)
        video, _ = self.head.video_global(C4CAllGather.apply(local), C4CAllGather.apply(mask))
        return symmetric_infonce(self.head.loose_logits(C4CAllGather.apply(text), video))


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    pixels = torch.randn(B, T, 3, 32, 32, generator=g)
    mask = torch.ones(B, T)
    mask[1, 2:] = 0
    mask[6, 3:] = 0
    pixels = pixels * mask[:, :, None, None, None]
    tokens = torch.zeros(B, 8, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1:5] = torch.randint(300, 5000, (B, 4), generator=g)
    tokens[:, 5] = 49407
    return pixels, mask, tokens


def _ours(variant: str, emulate: int):  # type: ignore[no-untyped-def]
    from harness.backbone import TINY_CLIP, load_clip
    from harness.train.model import build_model

    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP)
    torch.manual_seed(1)
    model = build_model(variant, clip, protocol="paper", numerics="fast", num_frames=T,
                        emulate_gpus=emulate)
    return model.eval()  # no dropout: the cross encoder's would differ between processes


def _worker(rank: int, port: int, variant: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=G)
    base = _ours(variant, 1)  # same initial weights and frozen parameters as ours
    ddp = DistributedDataParallel(C4CModel(base.clip, base.head), find_unused_parameters=True)
    pixels, mask, tokens = _inputs()
    lo, hi = rank * B // G, (rank + 1) * B // G
    loss = ddp(pixels[lo:hi], mask[lo:hi], tokens[lo:hi])
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    grads = {n: p.grad.clone() for n, p in ddp.module.named_parameters() if p.grad is not None}
    torch.save({"loss": float(mean_loss) / G, "grads": grads}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("variant", ["seqTransf_preE4_A4", "tightTransf_E4"])
def test_emulated_gpus_equal_real_ddp_of_clip4clip(variant: str, tmp_path: Path) -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _ours(variant, G)
        loss = model(*_inputs())
        loss.backward()
        ours = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    finally:
        torch.set_num_threads(n)
    mp.spawn(_worker, args=(_free_port(), variant, str(tmp_path)), nprocs=G, join=True)
    ref = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert float(loss.detach()) == pytest.approx(ref["loss"], rel=1e-5)
    assert set(ours) == set(ref["grads"])
    for name, grad in ref["grads"].items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # the comparison covered CLIP (before the gather) and the head
    assert any(k.startswith("clip.model.transformer") for k in ours)
    assert any(k.startswith("clip.model.visual.transformer") for k in ours)
    assert any(k.startswith("head.") for k in ours)


def test_pre_gather_gradients_are_one_over_g_of_the_single_gpu_ones() -> None:
    """The same loss on one GPU (G=1) and emulating 4: post-gather gradients equal, pre-gather /4."""
    torch.set_num_threads(1)
    grads = {}
    for g in (1, 4):
        model = _ours("seqTransf_preE4_A4", g)
        loss = model(*_inputs())
        loss.backward()
        grads[g] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for name, g1 in grads[1].items():
        # seqTransf_preE4_A4: E and S run before the gather (video_local), A and the logit scale after
        pre = name.startswith(("clip.", "head.seq", "head.excitation"))
        post = name.startswith(("head.aggregation", "head.logit_scale"))
        assert pre != post, name
        if pre:
            torch.testing.assert_close(grads[4][name], g1 / 4, rtol=1e-5, atol=1e-9, msg=name)
        elif post:
            torch.testing.assert_close(grads[4][name], g1, rtol=1e-5, atol=1e-9, msg=name)
