"""``eabench train --dry-run``: the resolved protocol, with expected values computed by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

# PAPER.md §1.2: what CLIP4Clip's freeze_layer_num 0 leaves frozen (linear_patch 2d).
FROZEN_PAPER = {"token_embedding.weight", "positional_embedding", "visual.class_embedding",
                "visual.positional_embedding", "visual.conv1.weight", "visual.ln_pre.weight",
                "visual.ln_pre.bias"}


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.data.fixtures import make_fixture

    root = tmp_path_factory.mktemp("dry") / "msrvtt"
    make_fixture("msrvtt", root, videos=10, seed=0)
    return root


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["train", "--dry-run", "--json", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # one JSON object on stdout
    return json.loads(out[0])


def test_tight_on_msrvtt_preset(msrvtt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, "--variant", "tightTransf_E4", "--dataset", "msrvtt", "--root", str(msrvtt),
                 "--backbone", "eabench-tiny")
    assert plan["loss_groups"] == 4 and plan["emulate_gpus"] == 4
    assert set(plan["frozen_clip_params"]) == FROZEN_PAPER and len(plan["frozen_clip_params"]) == 7
    assert plan["numerics"] == "reference" and plan["optimizer"] == "bertadam"
    assert plan["eval_batch_size"] == 16
    assert plan["lr"] == {"clip": pytest.approx(1e-7), "new": pytest.approx(1e-4)}
    # fixture: every listed train video with a file, every caption a pair (expand_msrvtt_sentences)
    from harness.data import read_dataset

    train = read_dataset("msrvtt", msrvtt, "train9k")
    pairs = sum(len(r.texts) for r in train if r.path is not None)
    assert plan["train_pairs"] == pairs
    assert plan["steps_per_epoch"] == pairs // 128 and plan["warnings"]


def test_meanp_gradient_scale_and_emulation_off(msrvtt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--variant", "meanP", "--dataset", "msrvtt", "--root", str(msrvtt), "--backbone", "eabench-tiny"]
    plan = _plan(capsys, *common)
    assert plan["grad_scale_pre_gather"] == 0.25 and plan["loss_groups"] == 1
    off = _plan(capsys, *common, "--set", "emulate_gpus=1")
    assert off["grad_scale_pre_gather"] == 1.0 and off["loss_groups"] == 1 and off["emulate_gpus"] == 1
    tight_off = _plan(capsys, *common[:1], "tightTransf", *common[2:], "--set", "emulate_gpus=1")
    assert tight_off["loss_groups"] == 1


def test_steps_of_a_small_batch(msrvtt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, "--variant", "meanP_E4", "--dataset", "msrvtt", "--root", str(msrvtt),
                 "--backbone", "eabench-tiny", "--batch-size", "8", "--epochs", "3")
    steps = plan["train_pairs"] // 8
    assert plan["steps_per_epoch"] == steps and plan["total_steps"] == 3 * steps
    # warmup_cosine: the steps s with s / total < 0.1
    assert plan["warmup_steps"] == sum(1 for s in range(3 * steps) if s / (3 * steps) < 0.1)


def _vit_b32_counts() -> tuple[int, int]:
    """ViT-B/32 parameter counts by hand (DATASETS.md §5.1 shapes): (all, frozen by §1.2)."""
    def block(w: int) -> int:  # in_proj 3w*w+3w, out_proj w*w+w, two LayerNorms, MLP w->4w->w
        return (3 * w * w + 3 * w) + (w * w + w) + 4 * w + (w * 4 * w + 4 * w) + (4 * w * w + w)
    text = 49408 * 512 + 77 * 512 + 12 * block(512) + 2 * 512 + 512 * 512 + 1  # + ln_final, proj, scale
    vision = 768 * 3 * 32 * 32 + 768 + 50 * 768 + 2 * 768 + 12 * block(768) + 2 * 768 + 768 * 512
    frozen = 49408 * 512 + 77 * 512 + 768 + 50 * 768 + 768 * 3 * 32 * 32 + 2 * 768
    return text + vision, frozen


def test_vit_b32_counts_without_reading_weights(msrvtt: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(b"not read by a dry run")
    plan = _plan(capsys, "--variant", "meanP", "--dataset", "msrvtt", "--root", str(msrvtt),
                 "--weights", str(weights))
    total, frozen = _vit_b32_counts()
    assert total == 151_277_313  # the published size of CLIP ViT-B/32
    # trainable CLIP: everything but the frozen tensors; CLIP's logit scale trains (as head.logit_scale)
    assert plan["trainable"] == {"clip": total - frozen, "new": 0}
    assert set(plan["frozen_clip_params"]) == FROZEN_PAPER


def test_frozen_protocol_trains_no_clip(msrvtt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, "--variant", "meanP_E4", "--dataset", "msrvtt", "--root", str(msrvtt),
                 "--backbone", "eabench-tiny", "--protocol", "frozen")
    from variants import head_params

    assert plan["frozen_clip_params"] == [] and plan["numerics"] == "fast"
    assert plan["trainable"] == {"clip": 0, "new": head_params("meanP_E4", 12, 64) + 1}  # + logit scale


def test_readable_table_without_json(msrvtt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dry-run", "--variant", "meanP", "--dataset", "msrvtt", "--root", str(msrvtt),
                 "--backbone", "eabench-tiny"]) == 0
    out = capsys.readouterr().out
    assert "grad_scale_pre_gather" in out and "visual.conv1.weight" in out
