"""DDP with the gloo backend on 2 CPU processes equals one process on the same global batch.

The model is the paper-protocol one (tiny CLIP + a seqTransf_preE4_A4 head, whose excitation and
transformer run *before* the all-gather and whose aggregation runs after), so the test covers
both sides of ``AllGather``'s gradient rule. Plain SGD with no effective clipping makes the update
proportional to the gradient, so a wrong gradient scale (e.g. CLIP4Clip's unscaled 1/W) fails.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

VARIANT = "seqTransf_preE4_A4"
T, B, WORLD = 4, 4, 2


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    pixels = torch.randn(B, T, 3, 32, 32, generator=g)
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    pixels[1, 3:] = 0
    tokens = torch.zeros(B, 8, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1:4] = torch.randint(300, 5000, (B, 3), generator=g)
    tokens[:, 4] = 49407
    return pixels, mask, tokens


def _model():  # type: ignore[no-untyped-def]
    from harness.backbone import TINY_CLIP, load_clip
    from harness.train import RetrievalModel
    from variants import build_head

    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP)
    head = build_head(VARIANT, num_frames=T, embed_dim=clip.embed_dim, text_init=clip.text_init(4),
                      logit_scale_init=clip.logit_scale_init)
    return RetrievalModel(head, clip, "fast")


def _step(train_model: torch.nn.Module, model: torch.nn.Module, batch) -> float:  # type: ignore[no-untyped-def]
    from harness.train import train_step

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, applied = train_step(train_model, model, opt, None, batch, max_grad_norm=1e9)
    assert applied
    return loss


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    from harness.distributed import init_from_env

    info = init_from_env("cpu")
    assert info.world_size == WORLD and info.rank == rank
    model = _model()
    ddp = DDP(model, find_unused_parameters=True)
    pixels, mask, tokens = _inputs()
    lo, hi = rank * B // WORLD, (rank + 1) * B // WORLD
    loss = _step(ddp, model, (pixels[lo:hi], mask[lo:hi], tokens[lo:hi]))
    torch.save({"loss": loss, "state": model.state_dict()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model()
        start = {k: v.clone() for k, v in model.state_dict().items()}
        loss = _step(model, model, _inputs())
        single = model.state_dict()
    finally:
        torch.set_num_threads(n)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    moved = 0
    for res in results:
        assert res["loss"] == pytest.approx(loss, rel=1e-5)
        for k, v in single.items():
            torch.testing.assert_close(res["state"][k], v, rtol=1e-4, atol=1e-6, msg=k)
            moved += int(not torch.equal(v, start[k]))
    # the step really changed CLIP (before the gather) and the head on both sides of it
    changed = {k for k, v in single.items() if not torch.equal(v, start[k])}
    assert any(k.startswith("clip.") for k in changed)
    assert any(k.startswith("head.excitation") for k in changed)
    assert any(k.startswith("head.aggregation") for k in changed)
    assert moved > 0
