"""Tables that say how sure they are: Δ base intervals, Holm marks, significance-aware bold, power.

Planted ranks on N = 40 queries (one caption per video; V2T ranks = T2V ranks):

- meanP (baseline): rank 1 on q0-9, 3 on q10-29, 8 on q30-39 -> R@1 25, R@5 75, R@10 100, MdR 3, MnR 3.75
- meanP_E4: rank 1 on q0-19, 3 on q20-29, 8 on q30-39 -> R@1 50, R@5 75, R@10 100, MdR 2, MnR 3.25
- meanP_A4: rank 1 on q0-8 and q10, 2 on q9, 3 on q11-30, 8 on q31-39 -> R@1 25, R@5 77.5, R@10 100,
  MdR 3, MnR 3.6; 3 skipped training steps

R@1, E4 vs base: 10 queries only E4 gets right, none the other way -> McNemar p = 2/2^10 = 0.001953;
A4 vs base: one each way -> p = 1. Holm over the two: 0.001953 * 2 = 0.003906 (significant, †) and
max(1 * 1, 0.0039) = 1. Δ base interval of E4: the per-query differences are 1 on 10 of 40 queries,
so the percentile bootstrap is Binomial(40, 1/4) / 40 quantiles: [5/40, 15/40] -> [12.5, 37.5] points.
Bold in T2V R@1: E4 is better than both others on 10 discordant queries each (Holm p 0.0039), so E4
alone is bold; base and A4 both show 25.0 -> both underlined. T2V R@5: A4 77.5 vs 75 and 75 with one
discordant query each (p = 1): every row ties with the best -> no marks. R@10: all 100 -> no marks.
Power: discordance 10/40 and 2/40 -> psi = 0.15; Connor: c = (1.959964 sqrt(40) + 0.841621
sqrt(40 + 0.708326 - 3.841459)) / 40.708326 = (12.395906 + 5.110180) / 40.708326 = 0.430037 and
d = c sqrt(.15) = 0.1666 exceeds psi, which no difference can: the bound is d = psi = c^2 = 0.184932
-> "about 18.5 points".
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from conftest_reports import Store

from reports.ranks import load_ranks_for
from reports.runs import load_runs, runs_frame
from reports.table_render import to_csv, to_html, to_latex, to_markdown
from reports.tables import build_tables

STUDY = "sig-study"
N = 40
BASE = np.r_[[1] * 10, [3] * 20, [8] * 10]
E4 = np.r_[[1] * 20, [3] * 10, [8] * 10]
A4 = np.r_[[1] * 9, [2], [1], [3] * 20, [8] * 9]
E4_SEED1 = E4.copy()
E4_SEED1[19] = 3  # R@1 19/40 = 47.5


def _m(r1: float, r5: float, r10: float, mdr: float, mnr: float) -> dict[str, float]:
    return {"R1": r1, "R5": r5, "R10": r10, "MdR": mdr, "MnR": mnr}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("sig"))
    parent = s.study(STUDY, table="meanP")
    kw = dict(study=STUDY, parent=parent, table="meanP", params={"test_texts": str(N)})
    s.run("meanP", t2v=_m(25, 75, 100, 3, 3.75), ranks={"t2v": BASE}, **kw)
    s.run("meanP_E4", t2v=_m(50, 75, 100, 2, 3.25), ranks={"t2v": E4}, **kw)
    s.run("meanP_A4", t2v=_m(25, 77.5, 100, 3, 3.6), ranks={"t2v": A4},
          extra_metrics={"train/skipped_steps": 3.0}, **kw)
    # the same rows with a second E4 seed, in another study
    p2 = s.study("seeds", table="meanP")
    kw2 = dict(study="seeds", parent=p2, table="meanP")
    s.run("meanP", t2v=_m(25, 75, 100, 3, 3.75), ranks={"t2v": BASE}, **kw2)
    s.run("meanP_E4", t2v=_m(50, 75, 100, 2, 3.25), ranks={"t2v": E4}, seed=0, **kw2)
    s.run("meanP_E4", t2v=_m(47.5, 75, 100, 2, 3.3), ranks={"t2v": E4_SEED1}, seed=1, **kw2)
    # an old run without ranks
    p3 = s.study("old", table="meanP")
    kw3 = dict(study="old", parent=p3, table="meanP", params={"test_texts": str(N)})
    s.run("meanP", t2v=_m(25, 75, 100, 3, 3.75), ranks={"t2v": BASE}, **kw3)
    s.run("meanP_E4", t2v=_m(50, 75, 100, 2, 3.25), **kw3)
    return s


def _table(store: Store, study: str):
    runs = load_runs(store.client, study=study)
    ranks = load_ranks_for(store.client, [r.run_id for r in runs])
    (t,) = build_tables(runs_frame(runs), study=study, table="meanP", ranks=ranks)
    return t


def _md_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|--"):
            cells = [c.strip().replace("\\", "") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows[cells[1]] = cells
    return rows


def test_delta_interval_holm_and_marks(store: Store) -> None:
    t = _table(store, STUDY)
    m = t.rows.set_index("variant")
    assert m.loc["meanP_E4", "p_base"] == pytest.approx(2 / 1024)
    assert m.loc["meanP_E4", "p_holm"] == pytest.approx(4 / 1024)
    assert m.loc["meanP_A4", "p_base"] == pytest.approx(1.0) and m.loc["meanP_A4", "p_holm"] == pytest.approx(1.0)
    assert m.loc["meanP_E4", "significant"] is True and m.loc["meanP_A4", "significant"] is False
    assert m.loc["meanP_E4", "test_base"] == "mcnemar-exact"
    assert m.loc["meanP_E4", "delta_base_lo"] == pytest.approx(12.5, abs=2.6)
    assert m.loc["meanP_E4", "delta_base_hi"] == pytest.approx(37.5, abs=2.6)

    rows = _md_rows(to_markdown(t))
    col = {h: i for i, h in enumerate(rows["Row"])}
    base, e4, a4 = rows["CLIP4Clip-meanP"], rows["(1) squeeze excitation (4)"], rows["(3) squeeze aggregation (4)"]
    assert e4[col["Δ base"]] == "+25.0†" and a4[col["Δ base"]] == "±0.0"
    assert re.fullmatch(r"\[\+\d+\.\d, \+\d+\.\d\]", e4[col["95 % CI"]])
    assert e4[col["p (Holm)"]] == "0.004" and a4[col["p (Holm)"]] == "1.000"
    assert base[col["Δ base"]] == "" and base[col["95 % CI"]] == ""
    # R@1: E4 alone bold, the two tied 25.0 rows both underlined
    r1 = col["T2V R@1↑"]
    assert e4[r1] == "**50.0**" and base[r1] == "<u>25.0</u>" and a4[r1] == "<u>25.0</u>"
    # R@5 and R@10: every row ties with the best -> no marks at all (not a bold 77.5)
    for c in ("T2V R@5↑", "T2V R@10↑"):
        assert "**" not in e4[col[c]] + a4[col[c]] + base[col[c]]
        assert "<u>" not in e4[col[c]] + a4[col[c]] + base[col[c]]
    assert a4[col["T2V R@5↑"]] == "77.5"
    # skipped steps: a column and a note
    assert a4[col["skipped"]] == "3" and e4[col["skipped"]] == ""
    notes = " ".join(t.notes)
    assert "skipped" in notes and "Holm" in notes and "McNemar" in notes
    assert "No marks where no row differs significantly from the best: T2V R5, T2V R10" in notes


def test_power_statement(store: Store) -> None:
    t = _table(store, STUDY)
    assert t.queries == N
    assert t.mde == pytest.approx(18.4932, abs=0.001)
    assert any("N = 40 test queries" in n and "about 18.5 points" in n and "psi = 0.150" in n for n in t.notes)
    # the statement is in every format
    assert "18.5 points" in to_markdown(t) and "18.5 points" in to_html(t) and "18.5 points" in to_latex(t)


def test_seed_aware_rows(store: Store) -> None:
    t = _table(store, "seeds")
    m = t.rows.set_index("variant")
    assert m.loc["meanP_E4", "test_base"] == "permutation-seeds"
    # per-query mean differences: 1 on q10-18, 0.5 on q19; only the all-positive sign pattern (and its
    # mirror) is as extreme: p = 2/1024, estimated from random permutations
    assert m.loc["meanP_E4", "p_base"] < 0.01
    assert m.loc["meanP_E4", "delta_base"] == pytest.approx(48.75 - 25)
    rows = _md_rows(to_markdown(t))
    col = {h: i for i, h in enumerate(rows["Row"])}
    assert rows["(1) squeeze excitation (4)"][col["T2V R@1↑"]] == "**48.8 ± 1.8**"
    assert any("several seeds" in n for n in t.notes)


def test_old_runs_render_with_na(store: Store) -> None:
    t = _table(store, "old")
    rows = _md_rows(to_markdown(t))
    col = {h: i for i, h in enumerate(rows["Row"])}
    e4 = rows["(1) squeeze excitation (4)"]
    assert e4[col["Δ base"]] == "+25.0" and e4[col["95 % CI"]] == "n/a" and e4[col["p (Holm)"]] == "n/a"
    notes = " ".join(t.notes)
    assert "n/a" in notes and "displayed values only" in notes
    # no pairs: the unpaired formula at the baseline's R@1 (p = .25):
    # 2.801585 sqrt(2 * .25 * .75 / 40) = 2.801585 * sqrt(0.009375) = 2.801585 * 0.0968246 = 0.271262
    assert t.mde == pytest.approx(27.126, abs=0.01)
    assert "unpaired" in notes
    csv = pd.read_csv(io.StringIO(to_csv(t)))
    assert {"delta_base_lo", "p_holm", "significant", "skipped_steps"} <= set(csv.columns)


def _frame(label: str) -> pd.DataFrame:
    rows = []
    for v, lab, r1 in (("meanP", "", 40.0), ("evil", label, 41.0)):
        rec = {"run_id": v, "variant": v, "temporal": "meanP", "dataset": "synthetic", "protocol": "frozen",
               "paper_table": "", "paper_label": lab, "seed": "0", "study": ""}
        for d in ("t2v", "v2t"):
            rec.update({f"{d}/R1": r1, f"{d}/R5": 70.0, f"{d}/R10": 80.0, f"{d}/MdR": 2.0, f"{d}/MnR": 7.0})
        rows.append(rec)
    return pd.DataFrame(rows)


def test_markdown_and_html_escape_labels() -> None:
    (t,) = build_tables(_frame("<script>alert(1)</script> | x"))
    md, html = to_markdown(t), to_html(t)
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "<script>" not in html and "&lt;script&gt;" in html
    # the pipe in the label did not split the row: every body line has as many cells as the header
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    counts = {len(re.split(r"(?<!\\)\|", ln.strip().strip("|"))) for ln in lines}
    assert len(counts) == 1


def test_latex_escapes_specials() -> None:
    (t,) = build_tables(_frame("50%_r&d#$ {x} ~^ [y] <z>"))
    tex = to_latex(t)
    assert r"50\%\_r\&d\#\$ \{x\} \textasciitilde{}\^{} {[}y{]} \textless{}z\textgreater{}" in tex
    assert "†" not in tex and "Δ" not in tex and "±" not in tex
