"""The report page and what it links to: no credentials, the runs-table URL, tables on the study's
parent run, the experiment tagged as model training."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest_reports import Store, metrics, weights_npz

from reports.build import build_report
from harness.tracking import mlflow_ui_command, runs_table_url
from reports.page import redact_command

STUDY = "page-study"
SECRET_URI = "postgresql://user:secret@host/db?password=secret2"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    s = Store(tmp_path_factory.mktemp("page"))
    parent = s.study(STUDY, table="meanP")
    ranks = np.r_[[1] * 5, [2] * 5]
    for v, g, w in (("meanP", False, False), ("meanP_A4", False, True)):
        s.run(v, t2v=metrics(50.0), study=STUDY, parent=parent, table="meanP", npz=weights_npz(gates=g, weights=w),
              ranks={"t2v": ranks})
    return s, parent


def test_redact_command() -> None:
    cmd = (f"eabench reproduce --tracking-uri {SECRET_URI} --storage=postgresql://o:pw3@h/optuna "
           f"--set x=mysql://a:pw4@h/d --root runs")
    red = redact_command(cmd)
    for secret in ("secret", "pw3", "pw4"):
        assert secret not in red
    assert "postgresql://user:***@host/db?password=***" in red and "--root runs" in red
    assert redact_command("eabench report all --study s") == "eabench report all --study s"


def test_command_line_of_the_cli_is_redacted(monkeypatch) -> None:
    from reports.cli import _command_line

    monkeypatch.setattr(sys, "argv", ["eabench", "report", "all", "--tracking-uri", SECRET_URI])
    line = _command_line()
    assert line.startswith("eabench report all --tracking-uri postgresql://user:***@host")
    assert "secret" not in line


def test_page_has_no_credentials_and_links_the_runs_table(store, tmp_path) -> None:
    s, parent = store
    res = build_report(
        s.client, studies=[STUDY], out=tmp_path / "rep", videos=1, fig_formats=("png",),
        tracking_uri=SECRET_URI, command=f"eabench report all --tracking-uri {SECRET_URI} --study {STUDY}",
        formats=("html",),
    )
    html = res.index.read_text()
    assert "secret" not in html  # neither the password nor the query parameter's value
    assert "postgresql://user:***@host/db?password=***" in html
    exp_id = s.client.get_experiment_by_name("eabench").experiment_id
    assert res.experiment_id == exp_id
    assert f'href="http://127.0.0.1:5000/#/experiments/{exp_id}/runs"' in html
    assert "--port 5000" in html
    # the study's parent run carries its table as Markdown and CSV even when only HTML was asked for
    logged = {a.path.rsplit("/", 1)[-1] for a in s.client.list_artifacts(parent, "report/tables")}
    assert any(p.endswith(".md") for p in logged) and any(p.endswith(".csv") for p in logged)
    assert any(p.endswith(".html") for p in logged)


def test_report_tables_cli_attaches_tables_to_the_parent(store, tmp_path, capsys) -> None:
    from harness.cli import main

    s, _ = store
    parent = s.study("tables-only", table="meanP")
    s.run("meanP", t2v=metrics(40.0), study="tables-only", parent=parent, table="meanP")
    rc = main(["report", "tables", "--study", "tables-only", "--tracking-uri", s.uri, "--out", str(tmp_path),
               "--format", "tex"])
    assert rc == 0
    logged = {a.path.rsplit(".", 1)[-1] for a in s.client.list_artifacts(parent, "report/tables")}
    assert logged == {"tex", "md", "csv"}
    capsys.readouterr()


def test_ui_command_and_url() -> None:
    assert mlflow_ui_command(SECRET_URI) == (
        "mlflow ui --backend-store-uri postgresql://user:***@host/db?password=*** --port 5000")
    assert runs_table_url("3") == "http://127.0.0.1:5000/#/experiments/3/runs"


def test_reproduce_summary_prints_runs_url_without_secrets(monkeypatch, capsys, tmp_path) -> None:
    import reports.reproduce as rr
    from harness.cli import main

    plan = rr.plan_reproduction(small=True, runs_root=tmp_path)
    fake = rr.ReproduceResult(plan, ["s"], tmp_path / "index.html", SECRET_URI, {"total": 1.0}, None, "7")
    monkeypatch.setattr(rr, "reproduce", lambda plan, command="": fake)
    assert main(["reproduce", "--small", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:5000/#/experiments/7/runs" in out and "secret" not in out
    assert main(["reproduce", "--small", "--runs-root", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"experiment_id": "7"' in out and "secret" not in out


def test_experiment_is_tagged_as_model_training(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from harness.tracking import configure

    s = Store(tmp_path / "runs")  # an experiment created before the tag existed
    assert "mlflow.experimentKind" not in s.client.get_experiment(s.exp_id).tags
    target = configure(tmp_path / "runs", s.uri)
    tags = MlflowClient(tracking_uri=s.uri).get_experiment(target.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    fresh = configure(tmp_path / "other", f"sqlite:///{(tmp_path / 'other').resolve()}/mlflow.db", "new-exp")
    tags = MlflowClient(tracking_uri=fresh.uri).get_experiment(fresh.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
