"""Study building blocks without training: storage URLs, coverage, the sweeper, the leaderboard."""
from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest_studies import store, uri  # noqa: F401
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from harness.errors import ConfigError
from studies.grid import CellGridSampler, coverage, table_cells
from studies.leaderboard import LiveBoard, leaderboard_rows, plain_line, render_table, rows_to_json
from studies.storage import dashboard_command, open_storage, resolve_storage
from studies.workers import HOST, is_stale, process_alive, sweep_stale_trials

DIST = {"variant": CategoricalDistribution(["a", "b", "c"]), "seed": CategoricalDistribution([42, 43])}


def _trial(variant: str, seed: int, state: TrialState, value: float | None = None, **attrs) -> optuna.trial.FrozenTrial:
    return create_trial(params={"variant": variant, "seed": seed}, distributions=DIST, state=state,
                        value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)


# ------------------------------------------------------------------------------------------ storage
def test_resolve_storage_forms(tmp_path: Path) -> None:
    spec = resolve_storage(None, "meanP-synthetic-frozen", tmp_path)
    assert spec.kind == "journal" and spec.path == tmp_path / "studies" / "meanP-synthetic-frozen.journal"
    assert resolve_storage("x/y.journal", "s").path == Path("x/y.journal")
    assert resolve_storage("journal:z.log", "s").path == Path("z.log")
    pg = resolve_storage("postgresql+psycopg2://bob:secret@db:5432/optuna", "s")
    assert pg.kind == "rdb" and pg.display == "postgresql+psycopg2://bob:***@db:5432/optuna"
    assert pg.arg.endswith("bob:secret@db:5432/optuna")
    assert dashboard_command(spec) == f"optuna-dashboard {spec.path}"
    with pytest.raises(ConfigError, match="unknown URL scheme 'http'"):
        resolve_storage("http://x", "s")
    with pytest.raises(ConfigError, match="must end in .journal"):
        resolve_storage("studies.db", "s")


def test_journal_storage_is_shared_between_opens(tmp_path: Path) -> None:
    spec = resolve_storage(str(tmp_path / "deep" / "s.journal"), "s")
    a = optuna.create_study(storage=open_storage(spec), study_name="s", direction="maximize")
    a.enqueue_trial({"x": 1})
    b = optuna.load_study(storage=open_storage(spec), study_name="s")
    assert [t.state for t in b.get_trials()] == [TrialState.WAITING]


# ----------------------------------------------------------------------------------------- coverage
def test_coverage_dedupes_by_first_complete_and_lists_missing() -> None:
    cells = table_cells(["a", "b", "c"], [42])
    trials = [_trial("a", 42, TrialState.COMPLETE, 1.0), _trial("b", 42, TrialState.FAIL, error="boom"),
              _trial("a", 42, TrialState.COMPLETE, 2.0), _trial("b", 42, TrialState.FAIL, error="boom"),
              _trial("c", 42, TrialState.RUNNING)]
    for i, t in enumerate(trials):
        t.number = i
    cov = coverage(trials, cells, max_failures=2)
    assert cov.complete == {("a", 42): 0}          # the first COMPLETE counts
    assert cov.duplicates == {("a", 42): [2]}
    assert cov.missing == [("b", 42), ("c", 42)]
    assert cov.gave_up == [("b", 42)] and cov.running == {("c", 42): [4]}
    assert not cov.done                            # c is still running
    assert cov.to_dict()["missing"] == ["b@42", "c@42"]


def test_grid_sampler_gives_each_cell_once_and_survives_enqueued_last_cell() -> None:
    grid = {"variant": ["a", "b", "c"], "seed": [42]}
    study = optuna.create_study(direction="maximize", sampler=CellGridSampler(grid, seed=0))
    seen = []

    def obj(trial: optuna.Trial) -> float:
        seen.append(trial.suggest_categorical("variant", ["a", "b", "c"]))
        trial.suggest_categorical("seed", [42])
        return 0.0

    study.optimize(obj, n_trials=2)
    missing = sorted({"a", "b", "c"} - set(seen))
    assert len(set(seen)) == 2 and len(missing) == 1
    # Optuna 5.0's GridSampler.after_trial raises KeyError for an enqueued last cell; ours does not.
    study.enqueue_trial({"variant": missing[0], "seed": 42})
    study.optimize(obj, n_trials=1)
    assert sorted(seen) == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------ sweeper
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_is_stale_by_pid_on_this_host_and_by_heartbeat_elsewhere() -> None:
    dead = _dead_pid()
    assert not process_alive(dead) and process_alive(os.getpid())
    now = time.time()
    mine = _trial("a", 42, TrialState.RUNNING, worker_host=HOST, worker_pid=dead, heartbeat=now)
    alive = _trial("a", 42, TrialState.RUNNING, worker_host=HOST, worker_pid=os.getppid(), heartbeat=now - 1e6)
    remote_old = _trial("a", 42, TrialState.RUNNING, worker_host="elsewhere", worker_pid=1, heartbeat=now - 100)
    assert is_stale(mine) and not is_stale(alive)
    assert is_stale(remote_old, stale_after_s=50, now=now) and not is_stale(remote_old, stale_after_s=500, now=now)
    assert not is_stale(_trial("a", 42, TrialState.COMPLETE, 1.0, worker_host=HOST, worker_pid=dead))


def test_sweeper_fails_dead_trials_and_requeues_each_cell_once(tmp_path: Path) -> None:
    spec = resolve_storage(str(tmp_path / "s.journal"), "s")
    study = optuna.create_study(storage=open_storage(spec), study_name="s", direction="maximize")
    dead = _dead_pid()
    for variant in ("a", "a", "b"):  # two dead trials of the same cell a, one of cell b
        study.enqueue_trial({"variant": variant, "seed": 42})
        t = study.ask()
        t.suggest_categorical("variant", ["a", "b", "c"])
        t.suggest_categorical("seed", [42, 43])
        t.set_user_attr("worker_host", HOST)
        t.set_user_attr("worker_pid", dead)
    live = study.ask()
    live.set_user_attr("worker_host", HOST)
    live.set_user_attr("worker_pid", os.getpid())

    def key(p):  # type: ignore[no-untyped-def]
        return (p.get("variant"), p.get("seed"))

    swept = sweep_stale_trials(study, cell_key=key)
    assert sorted(s.number for s in swept) == [0, 1, 2]
    trials = study.get_trials()
    assert [t.state for t in trials[:4]] == [TrialState.FAIL] * 3 + [TrialState.RUNNING]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["fixed_params"]["variant"] for t in waiting) == ["a", "b"]
    assert {t.user_attrs["retry_of"] for t in waiting} == {0, 2}
    assert sweep_stale_trials(study, cell_key=key) == []  # idempotent


# -------------------------------------------------------------------------------------- leaderboard
def _finished(number: int, variant: str, r1: float, state: TrialState = TrialState.COMPLETE, **attrs):
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    t = create_trial(params={"variant": variant, "seed": 42}, distributions=DIST, state=state,
                     value=r1 if state == TrialState.COMPLETE else None,
                     user_attrs={"t2v": {"R1": r1, "R5": 50.0}, "v2t": {"R1": r1 / 2}, "mlflow_run_id": f"run{number}",
                                 "best_epoch": 1, **attrs})
    t.number = number
    t.datetime_start = start
    t.datetime_complete = start + dt.timedelta(seconds=75 + number)
    return t


def test_leaderboard_rows_sort_complete_by_r1_and_render() -> None:
    trials = [_finished(0, "a", 10.0), _finished(1, "b", 30.5), _finished(2, "c", 5.0, TrialState.FAIL, error="x"),
              _finished(3, "a", 0.0, TrialState.PRUNED, duplicate_of=0)]
    rows = leaderboard_rows(trials)
    assert [(r.number, r.state) for r in rows] == [(1, "COMPLETE"), (0, "COMPLETE"), (2, "FAIL"), (3, "DUPLICATE")]
    js = rows_to_json(rows)
    assert js[0]["t2v"] == {"R1": 30.5, "R5": 50.0} and js[0]["v2t"] == {"R1": 15.25}
    assert js[0]["mlflow_run_id"] == "run1" and js[0]["duration_s"] == 76.0 and js[0]["seed"] == 42
    assert rows[3].note == "duplicate of #0"
    console = Console(file=io.StringIO(), width=120, record=True, force_terminal=False)
    console.print(render_table(rows, title="demo"))
    text = console.export_text()
    lines = [ln for ln in text.splitlines() if "COMPLETE" in ln]
    assert "30.5" in lines[0] and "15.2" in lines[0] and "1:16" in lines[0]
    assert plain_line(rows[0]) == "trial 1 b seed 42 COMPLETE T2V R@1=30.5 V2T R@1=15.2 (1:16)"


def test_live_board_logs_each_finished_trial_once_without_a_terminal() -> None:
    trials: list = [_finished(0, "a", 10.0)]
    console = Console(file=io.StringIO(), width=120, record=True, force_terminal=False)
    board = LiveBoard(lambda: list(trials), console=console, live=False, title="t", total=2, interval_s=60)
    with board:
        board.refresh()
        trials.append(_finished(1, "b", 20.0))
        board.refresh()
    text = console.export_text()
    assert text.count("trial 0 a seed 42 COMPLETE") == 1 and text.count("trial 1 b seed 42 COMPLETE") == 1


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_lists_tables_as_json(capsys: pytest.CaptureFixture) -> None:
    import json

    from harness.cli import main
    from variants import list_tables, table_variants

    assert main(["study", "tables", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["table"] for r in rows] == list_tables()
    assert all(r["variants"] == len(table_variants(r["table"])) for r in rows)


def test_cli_rejects_unknown_table_and_variants(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    assert main(["study", "table", "nosuchtable", "--root", str(tmp_path)]) == 2
    assert "unknown table 'nosuchtable'" in capsys.readouterr().err
    assert main(["study", "table", "meanP", "--variants", "seqTransf", "--root", str(tmp_path)]) == 2
    assert "--variants 'seqTransf' matches nothing in table meanP" in capsys.readouterr().err


def test_cli_search_with_space_file_reports_best_and_command(tmp_path: Path, store: Path,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Fake trainer (conftest_studies.fake_trainer, deterministic R@1 per variant): checks the CLI's
    wiring, --space parsing and --json output; the real engine runs in test_studies_search.py."""
    import json

    from harness.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("EABENCH_TEST_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("CI", "true")
    space = tmp_path / "space.json"
    space.write_text('{"variant": ["meanP_A4", "meanP_E4"], "lr": {"low": 1e-4, "high": 1e-2, "log": true}, '
                     '"weight_decay": null, "warmup_proportion": null, "batch_size": null}')
    argv = ["study", "search", "--variants", "meanP_A*", "--root", str(tmp_path), "--space", str(space),
            "--n-trials", "4", "--n-startup-trials", "2", "--tracking-root", str(store), "--tracking-uri", uri(store),
            "--trainer", "conftest_studies:fake_trainer", "--config-factory", "conftest_studies:fake_config", "--json",
            "--gpus", "none"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["storage"] == str(store / "studies" / "search-meanP_A_-synthetic-frozen.journal")
    assert len(out["trials"]) == 4 and {t["state"] for t in out["trials"]} == {"COMPLETE"}
    # fake R@1 = 10 + 10 * (sum of the name's character codes mod 7) + seed mod 3
    expect = {v: 10 + 10 * (sum(map(ord, v)) % 7) + 42 % 3 for v in ("meanP_A4", "meanP_E4")}
    best = out["best"]
    assert best["value"] == max(expect[t["variant"]] for t in out["trials"])
    assert best["command"].startswith(f"eabench train --variant {best['variant']} --dataset synthetic")
    assert f"--set lr={best['params']['lr']!r}" in best["command"]
    assert set(out["importances"]) <= {"variant", "lr"}


def test_cli_table_prints_the_final_leaderboard_on_stdout(tmp_path: Path, store: Path,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Fake trainer: the final leaderboard is the command's output (stdout), the hints are logs."""
    from harness.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("EABENCH_TEST_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("CI", "true")
    argv = ["study", "table", "--variants", "meanP,meanP_A4", "--root", str(tmp_path), "--storage",
            str(tmp_path / "t.journal"), "--tracking-root", str(store), "--tracking-uri", uri(store),
            "--trainer", "conftest_studies:fake_trainer", "--config-factory", "conftest_studies:fake_config",
            "--gpus", "none"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if "COMPLETE" in line]
    assert len(rows) == 2 and any("meanP_A4" in r for r in rows)
    assert "optuna-dashboard" in err and "optuna-dashboard" not in out
    # MLflow 3 opens a new experiment on its traces view: the hint names the runs table itself
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri(store)).get_experiment_by_name("eabench")
    assert f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs" in err.replace("\n", "")


def test_resources_reach_only_trainers_that_declare_them() -> None:
    from studies.trial import with_resources

    def engine_like(cfg, *, on_epoch=None, resources=None):  # type: ignore[no-untyped-def]
        return resources

    def wrapper(cfg, **kw):  # type: ignore[no-untyped-def]
        return kw

    token = object()
    assert with_resources(engine_like, token)("cfg") is token
    assert with_resources(wrapper, token)("cfg") == {}  # not forced through **kwargs
