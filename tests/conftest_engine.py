"""Engine-test helpers (import explicitly): one small synthetic benchmark and one MLflow store
per test session, and a TrainConfig factory with tiny settings.

The benchmark is written by ``harness.synthetic`` (real videos, MSR-VTT layout) without
its CLIP pre-training (tens of seconds on CPU); instead a seeded random tiny CLIP is saved where
the pre-training would put it, so it has a weights hash and the feature cache works as usual.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.train import TrainConfig

T = 4          # frames per video in the fixture (and max_frames)
N_TRAIN = 16
N_TEST = 8


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.backbone import TINY_CLIP, load_clip, save_clip
    from harness.synthetic import SyntheticConfig, generate_synthetic

    # Test modules import this fixture, so pytest instantiates it once per module: build it once
    # under the session's base temp folder and reuse it.
    root = tmp_path_factory.getbasetemp() / "engine_shared" / "synthetic"
    if (root / "clip" / f"{TINY_CLIP}.safetensors").is_file():
        return root
    generate_synthetic(root, SyntheticConfig(num_train=N_TRAIN, num_test=N_TEST, frames=T,
                                             pretrain_clip=False, seed=1), progress=False)
    state = torch.get_rng_state()
    torch.manual_seed(1234)
    save_clip(load_clip(TINY_CLIP), root / "clip" / f"{TINY_CLIP}.safetensors")
    torch.set_rng_state(state)
    return root


@pytest.fixture()
def one_thread() -> Any:
    """Tiny models on a loaded 2-core machine: one intra-op thread is 10-100x faster than two
    contending ones. Restored afterwards so other tests keep their setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tracking root (SQLite + artifacts + checkpoints) for the session: migrations run once."""
    from harness.tracking import configure

    root = tmp_path_factory.getbasetemp() / "engine_shared" / "runs"
    if not (root / "mlflow.db").is_file():
        configure(root, uri(root))
    return root


# The tests count steps and tune learning rates on the tiny fixture; pin what they rely on so a
# change of the synthetic preset's defaults does not silently change what they exercise.
PINNED = (("expand_sentences", "false"), ("lr", "1e-3"), ("coef_lr", "0.1"))


def make_cfg(synth: Path, store: Path, **kw: Any) -> TrainConfig:
    base = TrainConfig(variant="meanP", dataset="synthetic", root=str(synth), protocol="frozen",
                       epochs=2, batch_size=8, seed=7, device="cpu",
                       overrides=(("max_frames", str(T)),) + PINNED, tracking_root=str(store),
                       tracking_uri=uri(store),
                       progress=False, eval_batch_size=8)
    extra = kw.pop("overrides", ())
    cfg = dataclasses.replace(base, **kw)
    return dataclasses.replace(cfg, overrides=cfg.overrides + tuple(extra))


def uri(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"


def mlflow_run(store: Path, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri(store)).get_run(run_id)


def metric_history(store: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    hist = MlflowClient(tracking_uri=uri(store)).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in hist)
