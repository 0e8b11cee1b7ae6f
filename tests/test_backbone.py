"""harness.backbone: loading CLIP offline from every checkpoint format, and its encoders."""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import pytest
import torch

from harness.backbone import (
    SAVE_FORMATS,
    TINY_CLIP,
    ClipBackbone,
    detect_format,
    file_sha256,
    load_clip,
    save_clip,
)
from harness.errors import CheckpointError

OPENAI_BLOCK_KEYS = {
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
}


@pytest.fixture(autouse=True)
def _sha_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EABENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny() -> ClipBackbone:
    torch.manual_seed(0)
    bb = load_clip(TINY_CLIP)
    with torch.no_grad():  # a non-default value proves logit_scale travels through the file
        bb.model.logit_scale.fill_(math.log(100.0))
    return bb


@pytest.fixture(scope="module")
def saved(tiny: ClipBackbone, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    # deliberately misleading extensions: the format must be read from the bytes
    names = {"openai-jit": "ViT-tiny.bin", "state-dict": "tiny.pt", "safetensors": "tiny.pth"}
    return {fmt: save_clip(tiny, d / names[fmt], fmt) for fmt in SAVE_FORMATS}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 3, 32, 32, generator=g)
    tokens = torch.zeros(2, 32, dtype=torch.long)
    tokens[0, :5] = torch.tensor([49406, 320, 1929, 2368, 49407])
    tokens[1, :3] = torch.tensor([49406, 22697, 49407])
    return pixels, tokens


def test_tiny_architecture(tiny: ClipBackbone) -> None:
    assert (tiny.image_size, tiny.embed_dim, tiny.model_name) == (32, 64, TINY_CLIP)
    assert len(tiny.model.transformer.resblocks) == 4
    assert tiny.text_heads == 2
    assert tiny.model.visual.conv1.weight.shape == (64, 3, 8, 8)  # width 64, patch 8
    assert tiny.model.visual.positional_embedding.shape == (1 + (32 // 8) ** 2, 64)


def test_random_init_logit_scale_is_clip_default() -> None:
    torch.manual_seed(0)
    bb = load_clip(TINY_CLIP)
    assert bb.logit_scale_init == pytest.approx(math.log(1 / 0.07), abs=1e-6)
    assert bb.weights_sha256 is None


@pytest.mark.parametrize("fmt", SAVE_FORMATS)
def test_roundtrip_identical_outputs(tiny: ClipBackbone, saved: dict[str, Path], fmt: str) -> None:
    loaded = load_clip(TINY_CLIP, saved[fmt])
    pixels, tokens = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded.encode_frames(pixels), tiny.encode_frames(pixels))
        assert torch.equal(loaded.encode_text(tokens), tiny.encode_text(tokens))
    assert loaded.logit_scale_init == pytest.approx(math.log(100.0), abs=1e-6)
    assert loaded.weights_sha256 == hashlib.sha256(saved[fmt].read_bytes()).hexdigest()


def test_detected_formats(saved: dict[str, Path], tmp_path: Path) -> None:
    assert detect_format(saved["openai-jit"]) == "openai-jit"
    assert detect_format(saved["state-dict"]) == "torch-zip"
    assert detect_format(saved["safetensors"]) == "safetensors"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    assert detect_format(junk) == "unknown" or junk.read_bytes()[:1] == b"\x80"


def test_openai_jit_archive_looks_like_vit_b_32_pt(tiny: ClipBackbone, saved: dict[str, Path]) -> None:
    path = saved["openai-jit"]
    names = zipfile.ZipFile(path).namelist()
    assert any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert int(sd["input_resolution"]) == 32 and int(sd["context_length"]) == 77
    assert int(sd["vocab_size"]) == 49408
    for key in ("visual.conv1.weight", "visual.class_embedding", "visual.proj", "token_embedding.weight",
                "positional_embedding", "text_projection", "logit_scale", "ln_final.weight",
                "transformer.resblocks.3.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_fc.bias"):
        assert torch.equal(sd[key], tiny.model.state_dict()[key]), key
    # an independent reader of OpenAI archives (open_clip's, which rebuilds the model from shapes)
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = open_clip.load_openai_model(str(path), device="cpu")
    assert torch.equal(other.token_embedding.weight, tiny.model.token_embedding.weight)


def test_wrapped_and_prefixed_state_dict(tiny: ClipBackbone, tmp_path: Path) -> None:
    sd = {f"module.{k}": v for k, v in tiny.model.state_dict().items()}
    path = tmp_path / "ddp.bin"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    loaded = load_clip(TINY_CLIP, path)
    pixels, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded.encode_frames(pixels), tiny.encode_frames(pixels))


def test_missing_file_names_file_and_expectation(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    with pytest.raises(CheckpointError) as err:
        load_clip("ViT-B/32", missing)
    msg = str(err.value)
    assert str(missing) in msg and "not found" in msg
    assert "ViT-B-32.pt (TorchScript)" in msg and "ViT-B-32-quickgelu" in msg


def test_random_bytes_are_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "ViT-B-32.pt"
    junk.write_bytes(b"\x00\x01" + os.urandom(1000))
    with pytest.raises(CheckpointError) as err:
        load_clip("ViT-B/32", junk)
    assert str(junk) in str(err.value) and "ViT-B-32.pt (TorchScript)" in str(err.value)


def test_truncated_zip_is_rejected(saved: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "cut.pt"
    bad.write_bytes(saved["state-dict"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_clip(TINY_CLIP, bad)


def test_other_architecture_is_rejected(tiny: ClipBackbone, tmp_path: Path) -> None:
    sd = dict(tiny.model.state_dict())
    sd["text_projection"] = torch.zeros(64, 32)      # embed dim 32 instead of 64
    del sd["visual.ln_post.bias"]
    sd["visual.extra.weight"] = torch.zeros(3)
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError) as err:
        load_clip(TINY_CLIP, path)
    msg = str(err.value)
    assert str(path) in msg and "text_projection" in msg and "(64, 32)" in msg
    assert "visual.ln_post.bias" in msg and "visual.extra.weight" in msg


def test_big_model_needs_weights_or_explicit_random() -> None:
    with pytest.raises(CheckpointError, match="allow_random"):
        load_clip("ViT-B/32", None)


def test_text_length_32_equals_padding_to_77(tiny: ClipBackbone) -> None:
    _, tokens = _inputs()
    padded = torch.zeros(2, 77, dtype=torch.long)
    padded[:, :32] = tokens
    with torch.no_grad():
        short = tiny.encode_text(tokens)
        full = tiny.encode_text(padded)
        reference = tiny.model.encode_text(padded)  # open_clip's own encoder (needs L == 77)
    assert short.shape == (2, 64) and short.dtype == torch.float32
    torch.testing.assert_close(short, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(full, reference, atol=1e-6, rtol=1e-5)


def test_encode_frames_is_per_image_clip(tiny: ClipBackbone) -> None:
    pixels, _ = _inputs()
    with torch.no_grad():
        out = tiny.encode_frames(pixels)
        one = tiny.model.encode_image(pixels[1, 2:3])
    assert out.shape == (2, 3, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out[1, 2], one[0], atol=1e-6, rtol=1e-5)


def test_text_init_openai_layout(tiny: ClipBackbone) -> None:
    init = tiny.text_init(layers=4)
    assert init.heads == 2 and len(init.resblocks) == 4
    assert torch.equal(init.positional_embedding, tiny.model.positional_embedding)
    full = tiny.model.state_dict()
    for i, block in enumerate(init.resblocks):
        assert set(block) == OPENAI_BLOCK_KEYS
        for k, v in block.items():
            assert torch.equal(v, full[f"transformer.resblocks.{i}.{k}"])
    # a copy: changing the init must not change CLIP
    init.resblocks[0]["ln_1.weight"].add_(1.0)
    assert not torch.equal(init.resblocks[0]["ln_1.weight"], full["transformer.resblocks.0.ln_1.weight"])


def test_sha256_cache(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 "abc"
    assert file_sha256(f) == expected
    cache = tmp_path / "cache" / "sha256.json"
    data = json.loads(cache.read_text())
    data[str(f.resolve())]["sha256"] = "cached"
    cache.write_text(json.dumps(data))
    assert file_sha256(f) == "cached"  # same (size, mtime): not re-hashed
    f.write_bytes(b"abcd")
    os.utime(f, ns=(1, 10**9))
    assert file_sha256(f) == hashlib.sha256(b"abcd").hexdigest()
