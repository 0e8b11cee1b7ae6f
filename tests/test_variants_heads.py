"""Retrieval heads: placement and normalisation order of every row (PAPER.md §1.3, §3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest_variants import padded_mask, random_text_init

from variants import (
    build_head,
    head_params,
    list_variants,
    masked_mean,
    parse_variant_name,
    symmetric_infonce,
)
from variants.temporal import ResidualAttentionBlock, SeqLSTM

D = 32
ALL = list_variants()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def N(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def M(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(x.shape[0], x.shape[2], dtype=x.dtype)
    for b in range(x.shape[0]):
        n = float(m[b].sum())
        for t in range(x.shape[1]):
            out[b] += m[b, t] * x[b, t]
        out[b] /= max(n, 1.0)
    return out


def _data(batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, D, generator=g), padded_mask(batch, frames), torch.randn(batch, D, generator=g)


@pytest.mark.parametrize("frames", [12, 64])
@pytest.mark.parametrize("name", ALL)
def test_every_variant_builds_and_trains(name: str, frames: int) -> None:
    torch.manual_seed(0)
    head = build_head(name, frames, D, text_init=random_text_init(D))
    head.train()
    video, mask, text = _data(5, frames)
    video.requires_grad_(True)
    logits = head.similarity(text, video, mask, chunk=7)
    assert logits.shape == (5, 5)
    loss = symmetric_infonce(logits)
    assert torch.isfinite(loss)
    loss.backward()
    assert video.grad is not None and torch.isfinite(video.grad).all()
    for block in (head.excitation, head.aggregation):
        if block is not None:
            assert block.fc1.weight.grad is not None and torch.isfinite(block.fc1.weight.grad).all()
    aux = head.frame_weights(video, mask)
    spec = parse_variant_name(name)
    assert ("gates" in aux) == (spec.excitation is not None)
    assert ("weights" in aux) == (spec.aggregation is not None)
    if spec.masked:
        for v in aux.values():
            assert torch.equal(v[mask == 0], torch.zeros(int((mask == 0).sum())))


def _hand_E(head, x, mask):
    return x * head.excitation(x, mask)[1].unsqueeze(-1)


def _hand_A(head, x, mask):
    w = head.aggregation(x, mask)[1]
    return torch.einsum("btd,bt->bd", x, w)


def _encode(head, video, mask):
    return head.encode_video(video, mask)[0]


def test_meanP_rows_normalisation_order() -> None:
    torch.manual_seed(0)
    video, mask, _ = _data(4, 12)
    h = build_head("meanP", 12, D)
    assert torch.allclose(_encode(h, video, mask), N(M(N(video), mask)), atol=1e-6)
    h = build_head("meanP_E4", 12, D)
    assert torch.allclose(_encode(h, video, mask), N(M(_hand_E(h, N(video), mask), mask)), atol=1e-6)
    h = build_head("meanP_A4", 12, D)
    assert torch.allclose(_encode(h, video, mask), N(_hand_A(h, N(video), mask)), atol=1e-6)
    # A sees per-frame NORMALISED features: rescaling each frame leaves the output unchanged
    assert torch.allclose(_encode(h, video * (0.1 + torch.rand(4, 12, 1)), mask), _encode(h, video, mask), atol=1e-6)
    h = build_head("meanP_E4_A1-4", 12, D)
    x = _hand_E(h, N(video), mask)
    assert torch.allclose(_encode(h, video, mask), N(_hand_A(h, x, mask)), atol=1e-6)
    assert torch.allclose(h.video_local(video, mask), video)  # identity before the gather


@pytest.mark.parametrize("temporal", ["seqLSTM", "seqTransf"])
def test_sequential_rows_normalisation_order(temporal: str) -> None:
    torch.manual_seed(0)
    video, mask, _ = _data(4, 12)
    ti = random_text_init(D)

    def S(h, x):
        return h.seq(x, mask)

    h = build_head(temporal, 12, D, text_init=ti)
    assert torch.allclose(_encode(h, video, mask), N(M(N(S(h, video)), mask)), atol=1e-5)
    h = build_head(f"{temporal}_E4", 12, D, text_init=ti)
    assert torch.allclose(_encode(h, video, mask), N(M(_hand_E(h, N(S(h, video)), mask), mask)), atol=1e-5)
    h = build_head(f"{temporal}_A1-4", 12, D, text_init=ti)
    assert torch.allclose(_encode(h, video, mask), N(_hand_A(h, N(S(h, video)), mask)), atol=1e-5)
    h = build_head(f"{temporal}_E1-4_A4", 12, D, text_init=ti)
    got = _encode(h, video, mask)
    assert torch.allclose(got, N(_hand_A(h, _hand_E(h, N(S(h, video)), mask), mask)), atol=1e-5)
    # excitation_seq: E on raw features BEFORE S, then the usual N(M(N(.)))
    h = build_head(f"{temporal}_preE4", 12, D, text_init=ti)
    assert torch.allclose(_encode(h, video, mask), N(M(N(S(h, _hand_E(h, video, mask))), mask)), atol=1e-5)
    assert torch.allclose(h.video_local(video, mask), S(h, _hand_E(h, video, mask)), atol=1e-6)
    # excitation_seq_aggregation: A on the UN-normalised S output
    h = build_head(f"{temporal}_preE4_A4", 12, D, text_init=ti)
    s_out = S(h, _hand_E(h, video, mask))
    got = _encode(h, video, mask)
    assert torch.allclose(got, N(_hand_A(h, s_out, mask)), atol=1e-5)
    assert not torch.allclose(got, N(_hand_A(h, N(s_out), mask)), atol=1e-4)
    assert set(h.encode_video(video, mask)[1]) == {"gates", "weights"}


def test_encode_video_is_global_of_local() -> None:
    video, mask, _ = _data(3, 12)
    h = build_head("seqTransf_preE1-4_A1-4", 12, D, text_init=random_text_init(D))
    v1, _ = h.encode_video(video, mask)
    v2, aux = h.video_global(h.video_local(video, mask), mask)
    assert torch.allclose(v1, v2) and "weights" in aux
    assert torch.allclose(v1.norm(dim=-1), torch.ones(3))


def test_seqlstm_packing_and_fill_semantics() -> None:
    torch.manual_seed(0)
    s = SeqLSTM(D)
    x = torch.randn(3, 8, D)
    mask = torch.zeros(3, 8)
    for b, n in enumerate([5, 3, 2]):
        mask[b, :n] = 1
    out = s(x, mask)
    longest = 5
    for b, n in enumerate([5, 3, 2]):
        ref, _ = s.lstm_visual(x[b : b + 1, :n])
        assert torch.allclose(out[b, :n], ref[0] + x[b, :n], atol=1e-5)
        assert torch.allclose(out[b, n:longest], x[b, n:longest])  # packed zeros + residual
        assert torch.allclose(out[b, longest:], 2 * x[b, longest:])  # original features + residual


def test_attention_block_matches_nn_multihead_attention_with_key_mask() -> None:
    torch.manual_seed(0)
    blk = ResidualAttentionBlock(D, heads=4).eval()
    ref = torch.nn.MultiheadAttention(D, 4, batch_first=True)
    ref.load_state_dict(blk.attn.state_dict())
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.float)
    h = blk.ln_1(x)
    a, _ = ref(h, h, h, key_padding_mask=mask == 0, need_weights=False)
    expect = x + a
    expect = expect + blk.mlp(blk.ln_2(expect))
    assert torch.allclose(blk(x, mask), expect, atol=1e-5)


def test_seqtransf_text_init_and_padding_invariance() -> None:
    ti = random_text_init(D)
    h = build_head("seqTransf", 12, D, text_init=ti).eval()
    assert torch.equal(h.seq.frame_position_embeddings.weight, ti.positional_embedding)
    assert torch.equal(h.seq.transformerClip.resblocks[3].mlp.c_proj.weight, ti.resblocks[3]["mlp.c_proj.weight"])
    assert h.seq.transformerClip.resblocks[0].attn.heads == 2
    video, mask, _ = _data(4, 12)
    v = video.clone()
    v[mask == 0] = 50.0  # padded frames: masked out of attention and pooling
    assert torch.allclose(_encode(h, video, mask), _encode(h, v, mask), atol=1e-5)


def test_tight_similarity_pairs_chunking_and_raw_excitation() -> None:
    torch.manual_seed(0)
    h = build_head("tightTransf_E4", 12, D, text_init=random_text_init(D)).eval()
    assert h.logit_scale is None and not h.loose
    video, mask, text = _data(5, 12)
    text = text[:3]
    ev = _hand_E(h, video, mask)  # excitation on RAW frames
    expect = torch.zeros(3, 5)
    for i in range(3):
        for j in range(5):
            expect[i, j] = h.cross(text[i : i + 1], ev[j : j + 1], mask[j : j + 1])[0]
    for chunk in (1, 4, 5, 7, 10_000):
        assert torch.allclose(h.similarity(text, video, mask, chunk=chunk), expect, atol=1e-5)
    # not on normalised frames
    en = _hand_E(h, N(video), mask)
    alt = torch.stack([h.cross(text[0:1].expand(5, -1), en, mask)])
    assert not torch.allclose(alt[0], expect[0], atol=1e-4)
    with pytest.raises(NotImplementedError):
        h.video_global(video, mask)
    assert set(h.frame_weights(video, mask)) == {"gates"}


def test_tight_cross_encoder_dropout_and_positions() -> None:
    ti = random_text_init(D)
    h = build_head("tightTransf", 12, D, text_init=ti)
    assert torch.equal(h.cross.position_embeddings.weight, ti.positional_embedding)
    assert h.cross.dropout.p == 0.1 and h.cross.position_embeddings.num_embeddings == 77


def test_logit_scale_and_loose_logits() -> None:
    h = build_head("meanP", 12, D)
    assert math.isclose(float(h.logit_scale.detach()), math.log(100.0), rel_tol=1e-6)
    with torch.no_grad():
        h.logit_scale.fill_(7.0)
    h.clamp_logit_scale()
    assert math.isclose(float(h.logit_scale.detach()), math.log(100.0), rel_tol=1e-6)
    h2 = build_head("meanP", 12, D, logit_scale_init=math.log(1 / 0.07))
    text, video = torch.randn(3, D), N(torch.randn(4, D))
    expect = (1 / 0.07) * N(text) @ video.t()
    assert torch.allclose(h2.loose_logits(text, video), expect, atol=1e-4)
    frames, mask, _ = _data(4, 12)
    assert torch.allclose(h2.similarity(text, frames, mask), h2.loose_logits(text, _encode(h2, frames, mask)))


def test_symmetric_infonce_matches_hand_computation() -> None:
    s = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, 1.0], [1.0, 1.0, 1.0]])

    def ce(m: np.ndarray) -> float:
        return float(np.mean([-(m[i, i] - np.log(np.exp(m[i]).sum())) for i in range(len(m))]))

    expect = (ce(s) + ce(s.T)) / 2
    assert math.isclose(float(symmetric_infonce(torch.tensor(s))), expect, rel_tol=1e-12)
    with pytest.raises(ValueError):
        symmetric_infonce(torch.zeros(2, 3))


def test_head_params_counts_built_modules() -> None:
    for name in ["meanP", "meanP_E4", "seqLSTM_A1-6", "seqTransf_preE4_A1-4", "tightTransf_E1-3", "tightTransf"]:
        h = build_head(name, 64, D)
        direct = sum(p.numel() for n, p in h.named_parameters() if n != "logit_scale")
        assert head_params(name, 64, D) == direct, name
    assert head_params("meanP") == 0
    assert head_params("meanP_E4") == 87 and head_params("meanP_A1-4") == 1212
    assert head_params("seqLSTM") == 4 * (512 * 512 * 2 + 2 * 512)  # 4 gates x (W_ih, W_hh, b_ih, b_hh)


def test_masked_mean_and_init_weights() -> None:
    x = torch.randn(2, 4, 3)
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    assert torch.allclose(masked_mean(x, m)[0], x[0, :2].mean(0))
    assert torch.equal(masked_mean(x, m)[1], torch.zeros(3))  # max(sum m, 1) guard
    torch.manual_seed(0)
    h = build_head("seqTransf_E4", 12, 64)  # no text_init: random N(0, 0.02) init
    w = h.seq.frame_position_embeddings.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002
    assert float(h.seq.transformerClip.resblocks[0].mlp.c_fc.bias.detach().abs().max()) == 0.0


def test_input_shape_errors_are_clear() -> None:
    h = build_head("meanP_A4", 12, D)
    with pytest.raises(ValueError, match="frames must be"):
        h.encode_video(torch.randn(2, 10, D), torch.ones(2, 10))
    with pytest.raises(ValueError, match="mask must be"):
        h.encode_video(torch.randn(2, 12, D), torch.ones(2, 11))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_autocast_batch128() -> None:
    dev = torch.device("cuda")
    for name in ["seqTransf_A1-4", "seqLSTM_preE4_A4", "meanP_E4_A4-masked"]:
        h = build_head(name, 12, 512).to(dev)
        frames = torch.randn(128, 12, 512, device=dev)
        mask = torch.ones(128, 12, device=dev)
        mask[::3, 7:] = 0
        text = torch.randn(128, 512, device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = symmetric_infonce(h.similarity(text, frames, mask))
        loss.backward()
        assert torch.isfinite(loss)
    h = build_head("tightTransf_E4", 12, 512).to(dev).eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        s = h.similarity(torch.randn(1000, 512, device=dev), torch.randn(1000, 12, 512, device=dev),
                         torch.ones(1000, 12, device=dev), chunk=16384)
    assert s.shape == (1000, 1000) and torch.isfinite(s.float()).all()
