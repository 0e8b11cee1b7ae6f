"""Paper-style tables from a small set of runs the test logs itself (no engine involved).

Hand numbers: meanP seeds 40.0 / 42.0 -> 41.0 ± 1.414 (sample std); meanP_E4 44.0 and
meanP_A4 43.96 both display as 44.0 -> both bold, nothing underlined in T2V R@1; MdR 2/3/1
(lower is better) -> A4 bold, meanP underlined; MnR 15.5/14/20 -> E4 bold, meanP underlined.
Published CLIP4Clip-meanP on MSR-VTT: T2V R@1 43.1 -> Δ ref(E4) = +0.9, Δ ref(meanP) = -2.1.
"""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from conftest_reports import Store, metrics

from reports.runs import load_runs, runs_frame
from reports.table_render import to_csv, to_html, to_latex, to_markdown, write_table
from reports.tables import best_second, build_tables

STUDY = "tbl-study"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("mlruns"))
    parent = s.study(STUDY, table="meanP")
    kw = dict(study=STUDY, parent=parent, table="meanP")
    s.run("meanP", t2v=metrics(40.0, mdr=2.0, mnr=16.0), seed=0, **kw)
    s.run("meanP", t2v=metrics(42.0, mdr=2.0, mnr=15.0), seed=1, **kw)
    s.run("meanP_E4", t2v=metrics(44.0, mdr=3.0, mnr=14.0), **kw)
    s.run("meanP_A4", t2v=metrics(43.96, mdr=1.0, mnr=20.0), **kw)
    # Not finished: must not appear in the table.
    s.run("meanP_E1-4", t2v=metrics(99.0), status="KILLED", **kw)
    # The same study also has a paper-protocol run: it must land in its own table.
    s.run("meanP", t2v=metrics(30.0), protocol="paper", **kw)
    return s


def _md_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[1]] = cells
    return rows


def _tables(store: Store):
    runs = load_runs(store.client, study=STUDY)
    return {t.protocol: t for t in build_tables(runs_frame(runs), study=STUDY, table="meanP")}


def test_runs_loaded_and_protocols_split(store: Store) -> None:
    runs = load_runs(store.client, study=STUDY)
    assert sorted(r.variant for r in runs) == ["meanP", "meanP", "meanP", "meanP_A4", "meanP_E4"]
    tables = _tables(store)
    assert set(tables) == {"frozen", "paper"}
    assert "frozen protocol" in tables["frozen"].caption and "MSR-VTT" in tables["frozen"].caption
    assert "paper protocol" in tables["paper"].caption
    # the frozen table says its published rows come from another protocol
    assert any("not directly comparable" in n for n in tables["frozen"].notes)


def test_marks_mean_std_and_deltas_markdown(store: Store) -> None:
    t = _tables(store)["frozen"]
    md = to_markdown(t)
    rows = _md_rows(md)
    header = rows["Row"]
    col = {h: i for i, h in enumerate(header)}
    base, e4, a4 = (
        rows["CLIP4Clip-meanP"],
        rows["(1) squeeze excitation (4)"],
        rows["(3) squeeze aggregation (4)"],
    )
    r1, mdr, mnr = col["T2V R@1↑"], col["T2V MdR↓"], col["T2V MnR↓"]
    # mean ± sample std over the two seeds
    assert base[r1] == "41.0 ± 1.4"
    # 44.0 and 43.96 look equal -> both bold; rank 3 next, so no underline in this column
    assert e4[r1] == "**44.0**" and a4[r1] == "**44.0**"
    assert "<u>" not in base[r1]
    # lower is better for MdR and MnR
    assert a4[mdr] == "**1.0**" and base[mdr] == "<u>2.0 ± 0.0</u>" and e4[mdr] == "3.0"
    assert e4[mnr] == "**14.0**" and base[mnr] == "<u>15.5 ± 0.7</u>" and a4[mnr] == "20.0"
    # deltas: vs measured baseline (41.0) and vs published CLIP4Clip-meanP (43.1)
    assert e4[col["Δ base"]] == "+3.0" and a4[col["Δ base"]] == "+3.0" and base[col["Δ base"]] == ""
    assert e4[col["Δ ref"]] == "+0.9" and base[col["Δ ref"]] == "−2.1" and a4[col["Δ ref"]] == "+0.9"
    # published reference rows with their numbers and a source
    pub = next(v for k, v in rows.items() if k.startswith("CLIP4Clip-meanP (published)"))
    assert pub[r1] == "43.1" and pub[col["T2V R@5↑"]] == "70.4" and pub[mnr] == "16.2"
    head = next(v for k, v in rows.items() if "paper headline" in k)
    assert head[r1] == "43.9"
    assert "2406.01604" in md and "Cross-Modal Adapter" in md
    # paper order: baseline first, then (1) ... (3)
    labels = [k for k in rows if k != "Row"]
    assert (
        labels.index("CLIP4Clip-meanP")
        < labels.index("(1) squeeze excitation (4)")
        < labels.index("(3) squeeze aggregation (4)")
    )


def test_csv_holds_unrounded_numbers(store: Store) -> None:
    t = _tables(store)["frozen"]
    df = pd.read_csv(io.StringIO(to_csv(t)))
    base = df[(df["kind"] == "measured") & (df["variant"] == "meanP")].iloc[0]
    assert base["t2v/R1"] == pytest.approx(41.0)
    assert base["t2v/R1_std"] == pytest.approx(math.sqrt(2.0))
    assert base["n"] == 2
    a4 = df[df["variant"] == "meanP_A4"].iloc[0]
    assert a4["delta_base"] == pytest.approx(2.96)
    assert a4["delta_ref"] == pytest.approx(43.96 - 43.1)
    pub = df[df["kind"] == "published"]
    assert set(pub["method"]) == {"CLIP4Clip", "EA-CLIP4Clip (best variant)"}
    assert pub["source"].str.len().min() > 10


def test_latex_and_html(store: Store, tmp_path) -> None:
    t = _tables(store)["frozen"]
    tex = to_latex(t)
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in tex
    assert "\\textbf{44.0}" in tex and "\\underline{15.5 $\\pm$ 0.7}" in tex and "\\textbf{1.0}" in tex
    assert "\\multicolumn{5}{c}{T2V}" in tex
    assert "\\caption{MSR-VTT, frozen protocol" in tex
    html = to_html(t)
    assert "font-weight: bold" in html and "text-decoration: underline" in html
    assert "41.0 ± 1.4" in html and "<caption>" in html
    paths = write_table(t, tmp_path)
    assert sorted(paths) == ["csv", "html", "md", "tex"]
    assert all(p.is_file() and p.stat().st_size > 100 for p in paths.values())


def test_best_second_ties_share_marks() -> None:
    s = pd.Series([10.04, 9.96, 8.0, 8.0, 7.0])
    # 10.0, 10.0 tie for best; 8.0 ranks third
    assert list(best_second(s)) == ["best", "best", "", "", ""]
    s = pd.Series([5.0, 4.0, 4.0, 3.0])
    assert list(best_second(s)) == ["best", "second", "second", ""]
    assert list(best_second(pd.Series([3.0, 1.0, 2.0]), higher=False)) == ["", "best", "second"]


def test_activitynet_r50_and_no_reference_on_synthetic() -> None:
    rows = []
    for v, r1, r50 in (("meanP", 40.0, 97.0), ("meanP_A4", 41.0, 98.5)):
        rec = {
            "run_id": v,
            "variant": v,
            "temporal": "meanP",
            "dataset": "activitynet",
            "protocol": "paper",
            "paper_table": "meanP",
            "paper_label": "",
            "seed": "0",
            "study": "",
        }
        for d in ("t2v", "v2t"):
            rec.update(
                {
                    f"{d}/R1": r1,
                    f"{d}/R5": 70.0,
                    f"{d}/R10": 80.0,
                    f"{d}/R50": r50,
                    f"{d}/MdR": 2.0,
                    f"{d}/MnR": 7.0,
                }
            )
        rows.append(rec)
    df = pd.DataFrame(rows)
    t = build_tables(df)[0]
    assert ("t2v", "R50") in t.columns
    md = to_markdown(t)
    rows_md = _md_rows(md)
    col = {h: i for i, h in enumerate(rows_md["Row"])}
    pub = next(v for k, v in rows_md.items() if k.startswith("CLIP4Clip-meanP (published)"))
    assert pub[col["T2V R@50↑"]] == "98.1" and pub[col["T2V R@1↑"]] == "40.5"
    assert rows_md["(3) squeeze aggregation (4)"][col["Δ ref"]] == "+0.5"
    assert "44.1" in md  # the paper's ActivityNet headline
    syn = df.assign(dataset="synthetic")
    ts = build_tables(syn)[0]
    assert (ts.rows["kind"] == "published").sum() == 0
    assert "Synthetic" in ts.caption


def test_cli_tables_and_list_json_on_stdout(store: Store, tmp_path, capsys) -> None:
    import json

    from harness.cli import main

    rc = main(
        [
            "report",
            "tables",
            "--study",
            STUDY,
            "--tracking-uri",
            store.uri,
            "--out",
            str(tmp_path),
            "--format",
            "md,csv",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)  # stdout holds only the JSON summary
    assert {(t["dataset"], t["protocol"]) for t in out["tables"]} == {
        ("msrvtt", "frozen"),
        ("msrvtt", "paper"),
    }
    for t in out["tables"]:
        assert sorted(t["files"]) == ["csv", "md"]
    assert main(["report", "list", "--tracking-uri", store.uri, "--json"]) == 0
    assert STUDY in json.loads(capsys.readouterr().out)["studies"]
    # unknown study: a clear error naming the studies that exist
    assert main(["report", "tables", "--study", "nope", "--tracking-uri", store.uri]) == 2
    assert STUDY in capsys.readouterr().err


def test_runs_of_other_numerics_are_never_averaged_into_one_row(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hand numbers: reference meanP 40 / 42 -> 41.0 ± 1.4, reference meanP_E4 44; fast meanP 20
    alone. Averaging across numerics would have given meanP (40+42+20)/3 = 34.0."""
    s = Store(tmp_path_factory.mktemp("mlruns_numerics"))
    study = "numerics-study"
    parent = s.study(study, table="meanP")
    kw = dict(study=study, parent=parent, table="meanP", protocol="paper")
    s.run("meanP", t2v=metrics(40.0), seed=0, numerics="reference", **kw)
    s.run("meanP", t2v=metrics(42.0), seed=1, numerics="reference", **kw)
    s.run("meanP_E4", t2v=metrics(44.0), numerics="reference", **kw)
    s.run("meanP", t2v=metrics(20.0), seed=0, numerics="fast", **kw)
    tables = {t.name: t for t in build_tables(runs_frame(load_runs(s.client, study=study)), study=study,
                                              table="meanP")}
    assert set(tables) == {"msrvtt_paper_reference", "msrvtt_paper_fast"}
    ref, fast = tables["msrvtt_paper_reference"], tables["msrvtt_paper_fast"]
    assert "41.0 ± 1.4" in _md_rows(to_markdown(ref))["CLIP4Clip-meanP"][2]  # (underlined: second best)
    assert "20.0" in _md_rows(to_markdown(fast))["CLIP4Clip-meanP"][2] and "34.0" not in to_markdown(ref)
    assert "reference numerics" in ref.caption and "fast numerics" in fast.caption
    assert any("not the authors'" in n for n in fast.notes)
    assert not any("not the authors'" in n for n in ref.notes)
    assert set(pd.read_csv(io.StringIO(to_csv(fast)))["numerics"]) == {"fast"}


def test_a_table_of_one_numerics_keeps_its_plain_name(store: Store) -> None:
    # the module's runs record no numerics at all: one table per protocol, named as before
    assert {t.name for t in _tables(store).values()} == {"msrvtt_frozen", "msrvtt_paper"}
