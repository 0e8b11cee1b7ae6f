"""Every listing command prints its rows on stdout and keeps stderr for logs, through a real pipe.

`eabench study tables | grep meanP` must find the row: each command runs as its own process with
stdout and stderr on separate pipes (not a terminal), as a shell pipeline would run it. The
processes start together, so the suite waits for the slowest start-up, not for the sum of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_reports import Store, metrics

REPO = Path(__file__).resolve().parents[1]
STUDY = "demo-meanP-msrvtt-frozen"


def _store(root: Path) -> Store:
    """A study with two finished runs in the engine's MLflow schema."""
    store = Store(root)
    parent = store.study(STUDY, table="meanP")
    for variant, r1 in (("meanP", 40.0), ("meanP_A4", 42.0)):
        store.run(variant, t2v=metrics(r1), study=STUDY, parent=parent, table="meanP")
    return store


def _dataset(root: Path) -> Path:
    from harness.data.fixtures import make_fixture

    make_fixture("msrvtt", root, videos=6, seed=0)
    return root


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("cli_output")
    store = _store(tmp / "runs")
    data = _dataset(tmp / "msrvtt")
    commands = {
        "variants": ["variants", "meanP*"],
        "variants_tables": ["variants", "--tables"],
        "study_tables": ["study", "tables"],
        "study_tables_json": ["study", "tables", "--json"],
        "report_list": ["report", "list", "--root", str(store.root)],
        "report_tables": ["report", "tables", "--study", STUDY, "--root", str(store.root), "--out", str(tmp / "out"),
                          "--format", "md,csv", "--no-log"],
        "data_check": ["data", "check", "msrvtt", "--root", str(data), "--no-probe"],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true", "COLUMNS": "80"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], cwd=tmp, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, argv in commands.items()}
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


def _ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"{' '.join(res.args[3:])} failed:\n{res.stderr[-3000:]}"
    return res


def test_variants_rows_on_stdout(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = _ok(outputs["variants"])
    assert "meanP_E4" in res.stdout and "meanP_E4" not in res.stderr
    rows = [line for line in res.stdout.splitlines() if "meanP_E4_A4 " in line]
    assert rows and "seqTransf" not in res.stdout  # one row per variant, unwrapped, only the pattern's
    tables = _ok(outputs["variants_tables"])
    assert any("meanP" in line and "ratio" not in line for line in tables.stdout.splitlines())


def test_study_tables_on_stdout(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = _ok(outputs["study_tables"])
    assert [line for line in res.stdout.splitlines() if "meanP" in line]  # `| grep meanP` finds it
    assert "meanP" not in res.stderr
    rows = json.loads(_ok(outputs["study_tables_json"]).stdout)  # stdout holds only the JSON
    assert {"meanP", "seqTransf"} <= {r["table"] for r in rows}


def test_report_list_and_tables_on_stdout(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = _ok(outputs["report_list"])
    assert STUDY in res.stdout.splitlines() and STUDY not in res.stderr
    tables = _ok(outputs["report_tables"])
    line = next(x for x in tables.stdout.splitlines() if "msrvtt" in x)
    assert "frozen" in line and ".md" in tables.stdout and ".csv" in tables.stdout


def test_data_check_table_on_stdout(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = outputs["data_check"]
    assert res.returncode in (0, 1), res.stderr[-3000:]  # 1: a verdict of "unusable" is still a report
    assert "train9k" in res.stdout and "test1kA" in res.stdout and "train9k" not in res.stderr
