"""End-to-end training on the synthetic fixture: MLflow run contents, eval CLI, overfitting."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest_engine import N_TEST, T, make_cfg, metric_history, mlflow_run, one_thread, store, synth  # noqa: F401

from harness.train import run_training

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMA_METRICS = [f"{d}/{k}" for d in ("t2v", "v2t") for k in ("R1", "R5", "R10", "MdR", "MnR")]


def _artifacts(store: Path, run_id: str) -> Path:  # noqa: F811
    run = mlflow_run(store, run_id)
    uri = run.info.artifact_uri
    assert uri.startswith("file://"), uri
    path = Path(uri[len("file://"):])
    assert path.is_relative_to(Path(store).resolve() / "artifacts")
    return path


def _check_run(store: Path, run_id: str, variant: str, protocol: str, epochs: int,  # noqa: F811
               weight_keys: set[str]) -> None:
    run = mlflow_run(store, run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["variant"] == variant and tags["protocol"] == protocol
    assert tags["dataset"] == "synthetic" and tags["eabench.kind"] == "train"
    assert "paper_table" in tags and tags["seed"] == "7"
    params = run.data.params
    for key in ("variant", "temporal", "se_type", "protocol", "backbone", "weights_sha256", "seed",
                "git_commit", "frame_cache", "data_root", "preset.max_frames", "numerics"):
        assert key in params, key
    assert params["protocol"] == protocol and params["max_frames"] == str(T)
    assert len(params["weights_sha256"]) == 64
    for key in ["train/loss", "train/lr", *SCHEMA_METRICS]:
        steps = [s for s, _ in metric_history(store, run_id, key)]
        assert steps == list(range(epochs)), key
    best_epoch = int(run.data.metrics["best_epoch"])
    r1 = dict(metric_history(store, run_id, "t2v/R1"))
    assert run.data.metrics["best/t2v/R1"] == max(r1.values()) == r1[best_epoch]
    art = _artifacts(store, run_id)
    cfg = json.loads((art / "config.json").read_text())
    assert cfg["config"]["variant"] == variant and cfg["preset"]["max_frames"] == T
    assert len(json.loads((art / "history.json").read_text())) == epochs
    with np.load(art / "frame_weights.npz") as npz:
        assert weight_keys <= set(npz.files)
        assert npz["video_ids"].shape == (N_TEST,) and npz["texts"].shape == (N_TEST,)
        assert npz["mask"].shape == (N_TEST, T) and npz["frame_times"].shape == (N_TEST, T)
        if "weights" in npz.files:  # softmax over frames
            np.testing.assert_allclose(npz["weights"].sum(axis=1), 1.0, rtol=1e-5)
        if "gates" in npz.files:
            assert ((npz["gates"] > 0) & (npz["gates"] < 1)).all()


def test_frozen_run_leaves_complete_mlflow_run(synth: Path, store: Path) -> None:  # noqa: F811
    res = run_training(make_cfg(synth, store, variant="meanP_E4_A4", save_checkpoint=True))
    assert res.protocol == "frozen" and len(res.history) == 2
    _check_run(store, res.run_id, "meanP_E4_A4", "frozen", 2,
               {"video_ids", "texts", "mask", "frame_times", "gates", "weights"})
    assert (_artifacts(store, res.run_id) / "checkpoint" / "best.pt").is_file()
    # a finished run keeps only best.pt
    assert not (Path(store) / "checkpoints" / res.run_id / "last.pt").exists()
    # frozen features were written to the dataset's cache, keyed by backbone hash and settings
    stored = list((synth / ".eabench-cache" / "features" / "synthetic").glob("*/videos.pt"))
    assert len(stored) == 1
    import torch

    table = torch.load(stored[0], weights_only=False)
    assert table["frames"].shape[1:] == (T, 64) and len(table["ids"]) == 16 + N_TEST


def test_paper_run_and_eval_cli_reproduce_best(synth: Path, store: Path,  # noqa: F811
                                               capsys: pytest.CaptureFixture[str]) -> None:
    res = run_training(make_cfg(synth, store, variant="seqTransf_A4", protocol="paper"))
    _check_run(store, res.run_id, "seqTransf_A4", "paper", 2,
               {"video_ids", "texts", "mask", "frame_times", "weights"})
    assert "train/lr_clip" in mlflow_run(store, res.run_id).data.metrics

    from harness.cli import main

    rc = main(["eval", "--run", res.run_id, "--tracking-root", str(store), "--device", "cpu",
               "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_id"] == res.run_id and out["best_epoch"] == res.best_epoch
    assert out["protocol"] == "paper" and out["variant"] == "seqTransf_A4"
    assert out["t2v"] == res.t2v and out["v2t"] == res.v2t
    best = Path(store) / "checkpoints" / res.run_id / "best.pt"
    assert main(["eval", "--checkpoint", str(best), "--device", "cpu", "--no-progress", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["t2v"] == res.t2v and again["run_id"] == res.run_id


def test_overfit_tiny_batch_reaches_r1_100() -> None:
    """Fine-tuning tiny CLIP + head on one fixed batch of 8 (the paper-protocol step, constant
    lr) drives the loss down and the batch's own retrieval to R@1 = 100 both ways."""
    import torch

    from harness.backbone import TINY_CLIP, load_clip
    from harness.train import RetrievalModel, train_step
    from harness.metrics import t2v_v2t
    from harness.optim import build_optimizer, param_groups
    from harness.text import tokenize
    from variants import build_head

    torch.manual_seed(0)
    clip = load_clip(TINY_CLIP)
    head = build_head("meanP_A4", num_frames=T, embed_dim=clip.embed_dim, text_init=clip.text_init(4),
                      logit_scale_init=clip.logit_scale_init)
    model = RetrievalModel(head, clip, "fast")
    pixels = torch.randn(8, T, 3, 32, 32)
    mask = torch.ones(8, T)
    mask[0, 2:] = 0  # one short video: padded frames must not break anything
    pixels[0, 2:] = 0
    tokens = tokenize([f"a video of a {c} thing number {i}" for i, c in
                       enumerate(["red", "green", "blue", "cyan", "pink", "grey", "gold", "teal"])], 16)
    groups = param_groups(model.named_parameters(), lr=1e-3, coef_lr=1.0, weight_decay=0.2,
                          is_clip=lambda n: n.startswith("clip."))
    opt, sched = build_optimizer("adamw", groups, t_total=10**6, warmup=0.0)
    losses = [train_step(model, model, opt, sched, (pixels, mask, tokens), 1.0)[0] for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        sim = head.similarity(clip.encode_text(tokens), clip.encode_frames(pixels), mask)
    m = t2v_v2t(sim)
    assert m["t2v"]["R1"] == 100.0 and m["v2t"]["R1"] == 100.0


def test_unreadable_videos_are_skipped_and_counted(synth: Path, store: Path, tmp_path: Path) -> None:  # noqa: F811
    import shutil

    root = tmp_path / "synthetic"
    shutil.copytree(synth, root, ignore=shutil.ignore_patterns(".eabench-cache"))
    import csv

    with open(root / "MSRVTT_train.9k.csv") as f:
        train_id = next(csv.DictReader(f))["video_id"]
    with open(root / "MSRVTT_JSFUSION_test.csv") as f:
        test_id = next(csv.DictReader(f))["video_id"]
    for vid in (train_id, test_id):
        (root / "videos" / "all" / f"{vid}.mp4").write_bytes(b"not a video at all" * 10)
    res = run_training(make_cfg(root, store, variant="meanP_A4", epochs=1))
    assert set(res.failed_videos) == {train_id, test_id}
    params = mlflow_run(store, res.run_id).data.params
    assert params["failed_videos_train"] == "1" and params["failed_videos_test"] == "1"
    assert params["test_videos"] == str(N_TEST - 1) and params["train_videos"] == "15"
    with np.load(_artifacts(store, res.run_id) / "frame_weights.npz") as npz:
        assert test_id not in set(npz["video_ids"].tolist()) and len(npz["video_ids"]) == N_TEST - 1
