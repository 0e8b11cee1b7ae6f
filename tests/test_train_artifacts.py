"""What a run leaves in MLflow for the reports: per-query ranks and frame weights with moments."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest_engine import make_cfg, one_thread, store, synth, uri  # noqa: F401

from harness.metrics import metrics_from_ranks
from harness.train import run_training
from harness.train.evaluation import write_frame_weights


def test_ranks_artifact_reproduces_the_logged_metrics(synth: Path, store: Path, tmp_path: Path,  # noqa: F811
                                                      one_thread) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    res = run_training(make_cfg(synth, store, variant="meanP_A4"))
    client = MlflowClient(tracking_uri=uri(store))
    local = client.download_artifacts(res.run_id, "ranks.npz", str(tmp_path))
    with np.load(local, allow_pickle=False) as z:
        t2v, v2t, qids, vids = z["t2v"], z["v2t"], z["query_ids"], z["video_ids"]
    assert t2v.dtype == np.int64 and v2t.dtype == np.int64
    assert len(t2v) == len(qids) and len(v2t) == len(vids)
    assert t2v.min() >= 1 and t2v.max() <= len(vids)
    logged = client.get_run(res.run_id).data.metrics
    for direction, r in (("t2v", t2v), ("v2t", v2t)):
        for key, value in metrics_from_ranks(r).items():
            assert logged[f"best/{direction}/{key}"] == value  # exactly, not approximately
    # R@1 by hand from the ranks: the share of queries whose video ranked first
    assert res.t2v["R1"] == 100.0 * np.count_nonzero(t2v == 1) / len(t2v)
    # the run page shows its figures (mlflow ui renders image artifacts)
    figures = {f.path for f in client.list_artifacts(res.run_id, "figures")}
    assert figures == {"figures/frame_weights.png", "figures/training_curves.png"}
    png = client.download_artifacts(res.run_id, "figures/frame_weights.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_frame_weights_carry_the_annotated_moments(tmp_path: Path) -> None:
    nan = np.nan
    times = {"a": np.array([0.0, 1.0, 2.0, 3.0], np.float32), "b": np.array([0.0, 5.0, nan, nan], np.float32)}
    inputs = SimpleNamespace(
        test_ids=["a", "b"], test_texts=["x", "y"], test_t2v=[0, 1],
        cache=SimpleNamespace(times=lambda v: times[v]),
        test_moments=[((1.0, 3.0),), ((4.0, 10.0), (0.0, 0.5))])
    path = write_frame_weights(tmp_path / "fw.npz", inputs, {"mask": np.ones((2, 4), np.float32)})
    with np.load(path) as z:
        # [1, 3) holds the frames at 1 s and 2 s; [4, 10) the one at 5 s, [0, 0.5) the one at 0 s;
        # padding (NaN times) is never inside
        assert z["moments"].tolist() == [[False, True, True, False], [True, True, False, False]]
    inputs.test_moments = [(), ()]
    path = write_frame_weights(tmp_path / "none.npz", inputs, {"mask": np.ones((2, 4), np.float32)})
    with np.load(path) as z:
        assert "moments" not in z.files


def test_eval_rescores_the_best_epoch_and_logs_its_ranks(synth: Path, store: Path, tmp_path: Path,  # noqa: F811
                                                         one_thread) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    from harness.train import evaluate

    res = run_training(make_cfg(synth, store, variant="meanP_E4"))
    again = evaluate(run_id=res.run_id, tracking_root=str(store), device="cpu", progress=False,
                     tracking_uri=uri(store))
    assert (again.t2v, again.v2t, again.best_epoch) == (res.t2v, res.v2t, res.best_epoch)
    client = MlflowClient(tracking_uri=uri(store))
    trained = client.download_artifacts(res.run_id, "ranks.npz", str(tmp_path / "a"))
    evaluated = client.download_artifacts(res.run_id, "eval/ranks.npz", str(tmp_path / "b"))
    with np.load(trained) as a, np.load(evaluated) as b:
        assert np.array_equal(a["t2v"], b["t2v"]) and np.array_equal(a["v2t"], b["v2t"])
        assert np.array_equal(b["t2v"], again.ranks["t2v"])
