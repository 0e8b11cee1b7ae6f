"""Reference numerics: CLIP4Clip's convert_weights dtypes and an fp16 training step on CPU."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.backbone import TINY_CLIP, load_clip
from harness.numerics import Fp32LayerNorm, convert_weights_fp16, resolve_numerics


def test_convert_weights_dtypes() -> None:
    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP)
    convert_weights_fp16(clip.model)
    m = clip.model
    half, full = torch.float16, torch.float32
    for name, mod in m.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            assert mod.weight.dtype == half, name
            assert mod.bias is None or mod.bias.dtype == half, name
        if isinstance(mod, nn.MultiheadAttention):
            assert mod.in_proj_weight.dtype == half and mod.in_proj_bias.dtype == half, name
            assert mod.out_proj.weight.dtype == half, name
        if isinstance(mod, nn.LayerNorm):
            assert isinstance(mod, Fp32LayerNorm), name
            assert mod.weight.dtype == full and mod.bias.dtype == full, name
    assert m.text_projection.dtype == half and m.visual.proj.dtype == half
    # embeddings and the logit scale stay fp32 (CLIP4Clip converts only the listed tensors)
    for t in (m.token_embedding.weight, m.positional_embedding, m.visual.class_embedding,
              m.visual.positional_embedding, m.logit_scale):
        assert t.dtype == full


def test_fp32_layernorm_upcasts_and_returns_input_dtype() -> None:
    ln = nn.LayerNorm(8)
    ln.__class__ = Fp32LayerNorm
    x = (torch.randn(3, 8) * 1000).to(torch.float16)
    y = ln(x)
    assert y.dtype == torch.float16
    ref = nn.functional.layer_norm(x.float(), (8,), ln.weight, ln.bias, ln.eps).to(torch.float16)
    assert torch.equal(y, ref)


def test_reference_step_trains_fp16_weights_with_bertadam() -> None:
    from harness.train import RetrievalModel, train_step
    from harness.optim import build_optimizer, param_groups
    from variants import build_head

    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP)
    convert_weights_fp16(clip.model)
    head = build_head("meanP_E4", num_frames=4, embed_dim=clip.embed_dim,
                      logit_scale_init=clip.logit_scale_init)
    model = RetrievalModel(head, clip, "reference")
    pixels = torch.randn(4, 4, 3, 32, 32)
    tokens = torch.zeros(4, 6, dtype=torch.long)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, torch.tensor([320, 1929, 2368, 4558]), 49407
    frames = clip.encode_frames(pixels)
    assert frames.dtype == torch.float32  # ClipBackbone hands the head fp32 features
    groups = param_groups(model.named_parameters(), lr=1e-2, coef_lr=1.0, weight_decay=0.2,
                          is_clip=lambda n: n.startswith("clip."))
    opt, _ = build_optimizer("bertadam", groups, t_total=4, warmup=0.0)
    conv = clip.model.visual.conv1.weight
    before = conv.detach().clone()
    loss, applied = train_step(model, model, opt, None, (pixels, torch.ones(4, 4), tokens), 1.0)
    assert applied and torch.isfinite(torch.tensor(loss))
    assert conv.dtype == torch.float16 and opt.state[conv]["next_m"].dtype == torch.float16
    assert opt.state[head.excitation.fc1.weight if hasattr(head.excitation, "fc1") else
                     next(head.excitation.parameters())]["next_m"].dtype == torch.float32
    assert not torch.equal(conv.detach(), before)


def test_resolve_numerics() -> None:
    assert resolve_numerics("auto", "cpu") == "fast"
    assert resolve_numerics("reference", "cpu") == "reference"


@pytest.mark.gpu
def test_fast_step_on_cuda_keeps_fp32_master_weights() -> None:
    from harness.train import RetrievalModel, train_step
    from harness.optim import build_optimizer, param_groups
    from variants import build_head

    dev = torch.device("cuda")
    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP).to(dev)
    head = build_head("seqTransf_A4", num_frames=4, embed_dim=clip.embed_dim,
                      text_init=clip.text_init(4), logit_scale_init=clip.logit_scale_init)
    model = RetrievalModel(head, clip, "fast").to(dev)
    groups = param_groups(model.named_parameters(), lr=1e-3, coef_lr=1.0, weight_decay=0.2,
                          is_clip=lambda n: n.startswith("clip."))
    opt, sched = build_optimizer("adamw", groups, t_total=10, warmup=0.0, fused=True)
    tokens = torch.zeros(4, 6, dtype=torch.long, device=dev)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, torch.tensor([320, 1929, 2368, 4558]), 49407
    batch = (torch.randn(4, 4, 3, 32, 32, device=dev), torch.ones(4, 4, device=dev), tokens)
    loss, applied = train_step(model, model, opt, sched, batch, 1.0)
    assert applied and math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
