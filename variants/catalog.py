"""Every row of the paper's tables (PAPER.md §3.5) as data, plus our masked family.

``paper_rows()`` returns plain (spec, row) pairs in paper order; ``variants.registry`` files them
on first use. This module registers nothing itself.

Row labels follow the numbering of the authors' curated evaluation list; the paper's exact
wording is unknown (PAPER §0). The four ``excitation_seq_aggregation`` rows are trained on
MSR-VTT only in the authors' ``main_msrvtt.sh`` for both seqLSTM and seqTransf and may not be
in the paper; they form their own table.

Mixed excitation-and-aggregation sub-types: ``squeeze_expand`` = E r / A 1/r (r > 1) and
``expand_squeeze`` = E r / A 1/r (r < 1). Each block's activation follows its own ratio (ReLU
for r > 1, ReLU6 for r < 1). Note PAPER §9.3: in the official EA-CLIP4Clip release the
``unity`` sub-type always uses ReLU even for r < 1; we follow Improved_CLIP4Clip@28a7e5d
(ReLU6 for r < 1), the code the experiments ran on.
"""
from __future__ import annotations

from fractions import Fraction

from variants.rows import ALL_DATASETS, PaperRow
from variants.spec import VariantSpec, format_ratio

__all__ = ["paper_rows"]

SQ = Fraction(4)
EX = Fraction(1, 4)
SQUEEZE_RATIOS = (Fraction(2), Fraction(3), Fraction(4), Fraction(6))
EXPAND_RATIOS = (Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(1, 6))
RATIO_DATASETS = ("msrvtt", "didemo")
MSRVTT_ONLY = ("msrvtt",)


def _r(r: Fraction) -> str:
    return format_ratio(r, "/")


def _suffix(r: Fraction) -> str:
    """Ablation suffix: r=2 -> '-2', r=1/3 -> '-3' (authors' (5-2), (6-3) numbering)."""
    return f"-{r.numerator if r > 1 else r.denominator}"


def paper_rows() -> list[tuple[VariantSpec, PaperRow]]:
    """Every (spec, row) of every table, tables in order and rows in paper order; a spec
    appears once per table it is a row of (its first row is its primary row)."""
    rows: list[tuple[VariantSpec, PaperRow]] = []

    def add(spec: VariantSpec, table: str, label: str, scope: tuple[str, ...] = ALL_DATASETS) -> None:
        rows.append((spec, PaperRow(table, label, scope)))

    # meanP (parameter-free type)
    t = "meanP"
    add(VariantSpec(t), t, "CLIP4Clip-meanP")
    add(VariantSpec(t, excitation=SQ), t, "(1) squeeze excitation (4)")
    add(VariantSpec(t, excitation=EX), t, "(2) expand excitation (1/4)")
    add(VariantSpec(t, aggregation=SQ), t, "(3) squeeze aggregation (4)")
    add(VariantSpec(t, aggregation=EX), t, "(4) expand aggregation (1/4)")
    add(VariantSpec(t, excitation=SQ, aggregation=SQ), t, "(5) squeeze excitation-and-aggregation (4)")
    add(VariantSpec(t, excitation=EX, aggregation=EX), t, "(6) expand excitation-and-aggregation (1/4)")
    add(VariantSpec(t, excitation=SQ, aggregation=EX), t, "(7) squeeze excitation + expand aggregation (4 / 1/4)")
    add(VariantSpec(t, excitation=EX, aggregation=SQ), t, "(8) expand excitation + squeeze aggregation (1/4 / 4)")
    for r in SQUEEZE_RATIOS:
        num = "(5)" if r == SQ else f"(5{_suffix(r)})"
        add(VariantSpec(t, excitation=r, aggregation=r), "ratio-meanP-EA",
            f"{num} squeeze excitation-and-aggregation ({_r(r)})", RATIO_DATASETS)

    # seqLSTM / seqTransf (sequential type)
    for t in ("seqLSTM", "seqTransf"):
        add(VariantSpec(t), t, f"CLIP4Clip-{t}")
        add(VariantSpec(t, excitation=SQ), t, "(1) squeeze excitation (4)")
        add(VariantSpec(t, excitation=EX), t, "(2) expand excitation (1/4)")
        add(VariantSpec(t, excitation=SQ, excitation_pos="pre"), t, "(3) squeeze excitation + seq + meanP (4)")
        add(VariantSpec(t, excitation=EX, excitation_pos="pre"), t, "(4) expand excitation + seq + meanP (1/4)")
        add(VariantSpec(t, aggregation=SQ), t, "(5) squeeze aggregation (4)")
        add(VariantSpec(t, aggregation=EX), t, "(6) expand aggregation (1/4)")
        add(VariantSpec(t, excitation=SQ, aggregation=SQ), t, "(7) squeeze excitation-and-aggregation (4)")
        add(VariantSpec(t, excitation=EX, aggregation=EX), t, "(8) expand excitation-and-aggregation (1/4)")
        add(VariantSpec(t, excitation=SQ, aggregation=EX), t,
            "(9) squeeze excitation + expand aggregation (4 / 1/4)")
        add(VariantSpec(t, excitation=EX, aggregation=SQ), t,
            "(10) expand excitation + squeeze aggregation (1/4 / 4)")
        for r in EXPAND_RATIOS:
            num = "(6)" if r == EX else f"(6{_suffix(r)})"
            add(VariantSpec(t, aggregation=r), f"ratio-{t}-A", f"{num} expand aggregation ({_r(r)})",
                RATIO_DATASETS)

    # excitation_seq_aggregation (training section of main_msrvtt.sh, both sequential types)
    for t in ("seqLSTM", "seqTransf"):
        for e, a, words in (
            (SQ, SQ, "squeeze excitation + seq + squeeze aggregation (4)"),
            (EX, EX, "expand excitation + seq + expand aggregation (1/4)"),
            (SQ, EX, "squeeze excitation + seq + expand aggregation (4 / 1/4)"),
            (EX, SQ, "expand excitation + seq + squeeze aggregation (1/4 / 4)"),
        ):
            add(VariantSpec(t, excitation=e, excitation_pos="pre", aggregation=a),
                "excitation-seq-aggregation", f"{t}: {words}", MSRVTT_ONLY)

    # tightTransf (tight type)
    t = "tightTransf"
    add(VariantSpec(t), t, "CLIP4Clip-tightTransf")
    add(VariantSpec(t, excitation=SQ), t, "(1) squeeze excitation (4)")
    add(VariantSpec(t, excitation=EX), t, "(2) expand excitation (1/4)")
    add(VariantSpec(t, excitation=SQ), "ratio-tightTransf-E", "(1) squeeze excitation (4)", RATIO_DATASETS)
    for r in EXPAND_RATIOS:
        num = "(2)" if r == EX else f"(2{_suffix(r)})"
        add(VariantSpec(t, excitation=r), "ratio-tightTransf-E", f"{num} expand excitation ({_r(r)})",
            RATIO_DATASETS)

    # masked family: ours, for every non-baseline row (PAPER §9.4)
    primary: dict[VariantSpec, str] = {}
    for spec, row in rows:
        if not spec.is_baseline:
            primary.setdefault(spec, row.label if ":" in row.label else f"{spec.temporal} {row.label}")
    for spec, label in primary.items():
        masked = VariantSpec(spec.temporal, spec.excitation, spec.excitation_pos, spec.aggregation, masked=True)
        add(masked, "masked", f"masked: {label}")
    return rows

