"""Studies on several GPUs (issue 13): planning workers over GPUs, and trials that are torchrun jobs.

No GPU is needed: the planning is a pure function, and a trial of 2 processes runs on the CPU
with gloo (the engine's DDP path), which must give what one process gives on the same cell.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest_engine import store, synth, uri  # noqa: F401
from conftest_studies import child_runs, mlflow_client
from optuna.trial import TrialState

from harness.errors import ConfigError
from studies.gpus import WorkerPlan, parse_gpus, pin_gpus, plan_gpu_workers, plan_workers

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PINNED_SETS = (("max_frames", "4"), ("expand_sentences", "false"), ("lr", "1e-3"), ("coef_lr", "0.1"))


# ------------------------------------------------------------------------------------------ planning
def test_four_gpus_two_per_trial_make_two_workers() -> None:
    assert plan_gpu_workers([0, 1, 2, 3], 2) == [(0, 1), (2, 3)]
    assert plan_gpu_workers([3, 1], 1) == [(3,), (1,)]
    assert parse_gpus("0,1,2,3") == (0, 1, 2, 3) and parse_gpus("0-1,4") == (0, 1, 4) and parse_gpus("none") == ()
    four = [0, 1, 2, 3]
    assert plan_workers(workers=None, gpus=parse_gpus("0,1,2,3"), nproc_per_trial=2, visible=four) == \
        WorkerPlan(((0, 1), (2, 3)), 2)
    assert plan_workers(workers=2, gpus=(0, 1, 2, 3), nproc_per_trial=2, visible=four).n_workers == 2
    # --gpus left out: every visible GPU; --workers alone: the first workers x K of them
    assert plan_workers(workers=None, gpus=None, nproc_per_trial=1, visible=four).slots == ((0,), (1,), (2,), (3,))
    assert plan_workers(workers=1, gpus=None, nproc_per_trial=2, visible=four).slots == ((0, 1),)
    # no GPU (a CPU host, or --gpus none): unpinned workers, K CPU processes per trial
    assert plan_workers(workers=None, gpus=None, nproc_per_trial=2, visible=[]) == WorkerPlan((None,), 2)
    assert plan_workers(workers=3, gpus=(), nproc_per_trial=1, visible=four) == WorkerPlan((None, None, None), 1)
    # one worker on every visible GPU needs no pinning (it may train in the launcher's process)
    assert plan_workers(workers=None, gpus=None, nproc_per_trial=2, visible=[0, 1]) == WorkerPlan((None,), 2)
    # what the command line gives: --gpus none trains on the CPU, --device cpu pins nothing
    from studies.launch import StudyOptions

    none = StudyOptions(gpus="none", nproc_per_trial=2)
    assert none.worker_plan() == WorkerPlan((None,), 2)
    assert dict(none.context(kind="table", name="x").train_options)["device"] == "cpu"
    cpu = StudyOptions(workers=2, train_options=(("device", "cpu"),))
    assert cpu.worker_plan() == WorkerPlan((None, None), 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"workers": None, "gpus": (0, 1, 2), "nproc_per_trial": 2}, r"--gpus 0,1,2 \(3 GPUs\) cannot be split into "
                                                                 r"workers of --nproc-per-trial 2"),
    ({"workers": 3, "gpus": (0, 1, 2, 3), "nproc_per_trial": 2}, r"--workers 3 conflicts with --gpus 0,1,2,3 "
                                                                 r"--nproc-per-trial 2, which make 2 worker"),
    ({"workers": 3, "gpus": None, "nproc_per_trial": 2}, r"--workers 3 x --nproc-per-trial 2 needs 6 GPUs; this "
                                                         r"host sees 4"),
    ({"workers": None, "gpus": (0, 7), "nproc_per_trial": 1}, r"--gpus 0,7: this host sees GPUs 0,1,2,3, not 7"),
    ({"workers": None, "gpus": (1, 1), "nproc_per_trial": 1}, r"lists GPU 1 twice"),
    ({"workers": None, "gpus": None, "nproc_per_trial": 3}, r"sees 4 GPUs, not a multiple of --nproc-per-trial 3; "
                                                            r"pick them with --gpus \(e.g. --gpus 0,1,2\)"),
    ({"workers": None, "gpus": (0,), "nproc_per_trial": 0}, r"--nproc-per-trial 0: must be at least 1"),
])
def test_bad_worker_layouts_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_workers(visible=[0, 1, 2, 3], **kwargs)


def test_cli_rejects_bad_gpu_flags_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    base = ["study", "table", "--variants", "meanP", "--root", str(tmp_path), "--storage", str(tmp_path / "s.journal")]
    assert main([*base, "--gpus", "0,x"]) == 2
    assert "--gpus '0,x': expected GPU indices like 0,1,2,3 or 0-3 (or none), not 'x'" in capsys.readouterr().err
    assert main([*base, "--nproc-per-trial", "0"]) == 2
    assert "--nproc-per-trial must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "s.journal").exists()  # nothing was created


def test_pin_gpus_counts_the_launchers_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("CUDA already initialised in this test process")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert pin_gpus((1, 3)) == "5,7" and os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert pin_gpus((2, 3)) == "2,3"


# ---------------------------------------------------------------------------- torchrun jobs (CPU)
def _job_processes(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the job's spec file): agent and ranks."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _gone(pids: list[int]) -> bool:
    from studies.liveness import process_alive

    return not any(process_alive(p) for p in pids)


def _fake_cfg(store: Path):  # type: ignore[no-untyped-def]
    from harness.train import TrainConfig

    return TrainConfig(variant="meanP", root=".", protocol="frozen", device="cpu", tracking_root=str(store),
                       tracking_uri=uri(store), progress=False)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_pruned_torchrun_trial_is_stopped_whole_and_leaves_no_last_pt(store: Path, tmp_path: Path,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.train.checkpoints import LAST, checkpoint_dir
    from studies.torchrun import run_torchrun_trial

    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("EABENCH_TEST_PIDS", str(pids))
    monkeypatch.syspath_prepend(str(TESTS))
    seen: list[int] = []

    def prune(epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        raise optuna.TrialPruned("worse than the median")

    tags = {"optuna.study": "gpus-prune", "optuna.trial": "0"}
    with pytest.raises(optuna.TrialPruned):
        run_torchrun_trial(_fake_cfg(store), nproc=2, trainer="conftest_studies:checkpointing_fake_trainer",
                           workdir=tmp_path / "job", on_epoch=prune, tags=tags, tracking_uri=uri(store),
                           term_timeout_s=20)
    assert seen == [0]
    ranks = [int(x) for x in pids.read_text().split()]
    assert len(ranks) == 2 and _gone(ranks) and _job_processes(str(tmp_path / "job")) == []
    [run] = mlflow_client(store).search_runs(
        [mlflow_client(store).get_experiment_by_name("eabench").experiment_id],
        "tags.`optuna.study` = 'gpus-prune'")
    assert run.info.status == "KILLED"
    folder = checkpoint_dir(store, run.info.run_id)
    assert folder.is_dir() and not (folder / LAST).exists()  # written at epoch 0, freed on pruning


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_killed_worker_takes_its_torchrun_job_down_and_keeps_last_pt(store: Path, tmp_path: Path) -> None:  # noqa: F811
    """kill -9 of the worker that follows a job: the job's ranks notice within seconds and end
    (their run KILLED, last.pt kept for a resume), so the re-queued cell is not trained twice."""
    from harness.train.checkpoints import LAST, checkpoint_dir

    pids, job = tmp_path / "pids.txt", tmp_path / "job"
    owner = ("import sys, json; from pathlib import Path; from harness.train import TrainConfig; "
             "from studies.torchrun import run_torchrun_trial; "
             "run_torchrun_trial(TrainConfig.from_dict(json.loads(sys.argv[1])), nproc=2, "
             "trainer='conftest_studies:checkpointing_fake_trainer', workdir=Path(sys.argv[2]), "
             "tags={'optuna.study': 'gpus-kill', 'optuna.trial': '0'}, tracking_uri=sys.argv[3])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "EABENCH_TEST_PIDS": str(pids)}
    proc = subprocess.Popen([sys.executable, "-c", owner, json.dumps(_fake_cfg(store).to_dict()), str(job),
                             uri(store)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not ((job / "epochs.jsonl").exists() and (job / "epochs.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.time() < deadline, "the job never finished an epoch"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ranks = [int(x) for x in pids.read_text().split()]
    deadline = time.time() + 30
    while (not _gone(ranks) or _job_processes(str(job))) and time.time() < deadline:
        time.sleep(0.2)
    assert _gone(ranks) and _job_processes(str(job)) == []
    client = mlflow_client(store)
    [run] = client.search_runs([client.get_experiment_by_name("eabench").experiment_id],
                               "tags.`optuna.study` = 'gpus-kill'")
    assert run.info.status == "KILLED"
    assert (checkpoint_dir(store, run.info.run_id) / LAST).exists()
    assert len((job / "epochs.jsonl").read_text().splitlines()) < 3  # it did not train on


def test_table_study_with_two_processes_per_trial_equals_single_process_runs(synth: Path, store: Path,  # noqa: F811
                                                                            tmp_path: Path) -> None:
    """`--nproc-per-trial 2` on a CPU host: every cell once, each a torchrun job of 2 gloo processes
    whose MLflow run (world_size 2) is the trial's child run and matches one process on the cell."""
    from harness.train import run_training
    from studies.engine_bridge import make_config
    from studies.launch import StudyOptions, table_study

    variants = ["meanP", "meanP_A4"]
    options = StudyOptions(
        dataset="synthetic", root=str(synth), protocol="frozen", nproc_per_trial=2,
        storage=str(tmp_path / "ddp.journal"), study_name="ddp", sets=PINNED_SETS,
        train_options=(("epochs", 1), ("batch_size", 8), ("device", "cpu"), ("eval_batch_size", 8)),
        runs_root=str(store), tracking_uri=uri(store), progress=False)
    result = table_study(options, variants=",".join(variants))

    complete = [t for t in result.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["variant"] for t in complete) == variants and len(result.trials) == 2
    assert result.coverage.missing == [] and result.coverage.duplicates == {}
    children = {r.info.run_id: r for r in child_runs(store, result.parent_run_id)}
    assert len(children) == 2
    for t in complete:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.params["world_size"] == "2" and run.info.status == "FINISHED"
        assert run.data.tags["optuna.trial"] == str(t.number) and run.data.tags["variant"] == t.params["variant"]
        assert run.info.run_name == f"ddp/t{t.number:04d}-{t.params['variant']}-s42"
        assert t.value == pytest.approx(run.data.metrics["best/t2v/R1"])
        single = run_training(make_config(result.context, t.params["variant"], 42, {}))
        assert mlflow_client(store).get_run(single.run_id).data.params["world_size"] == "1"
        ddp_loss = mlflow_client(store).get_metric_history(run.info.run_id, "train/loss")[0].value
        assert ddp_loss == pytest.approx(single.history[0]["train/loss"], rel=1e-4)
        for d in ("t2v", "v2t"):
            assert t.user_attrs[d] == pytest.approx(getattr(single, d), abs=1e-6), (t.params["variant"], d)
