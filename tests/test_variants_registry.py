"""Variant names, validation rules, registry and catalog (PAPER.md §3.4-§3.5)."""
from __future__ import annotations

import json
from fractions import Fraction

import pytest

from variants import (
    VariantSpec,
    get_variant,
    list_tables,
    list_variants,
    parse_variant_name,
    register_variant,
    table_variants,
)
from variants.registry import _REGISTRY

ALL = list_variants()


@pytest.mark.parametrize("name", ALL)
def test_every_registered_name_round_trips(name: str) -> None:
    spec = parse_variant_name(name)
    assert spec.name == name
    assert get_variant(name).spec == spec
    assert VariantSpec.parse(name) == spec


def test_canonical_names_from_architecture() -> None:
    expect = {
        "meanP": VariantSpec("meanP"),
        "meanP_E4": VariantSpec("meanP", excitation=Fraction(4)),
        "meanP_E1-4": VariantSpec("meanP", excitation=Fraction(1, 4)),
        "meanP_A4": VariantSpec("meanP", aggregation=Fraction(4)),
        "meanP_E4_A1-4": VariantSpec("meanP", excitation=Fraction(4), aggregation=Fraction(1, 4)),
        "seqTransf_preE4": VariantSpec("seqTransf", excitation=Fraction(4), excitation_pos="pre"),
        "seqTransf_preE4_A4": VariantSpec("seqTransf", Fraction(4), "pre", Fraction(4)),
        "tightTransf_E4": VariantSpec("tightTransf", excitation=Fraction(4), excitation_pos="pre"),
        "meanP_A4-masked": VariantSpec("meanP", aggregation=Fraction(4), masked=True),
    }
    for name, spec in expect.items():
        assert spec.name == name
        assert parse_variant_name(name) == spec


def test_alternative_ratio_spellings_normalise() -> None:
    assert parse_variant_name("meanP_E1/4").name == "meanP_E1-4"
    assert parse_variant_name("meanP_A0.25").name == "meanP_A1-4"
    assert VariantSpec("meanP", excitation=0.25).excitation == Fraction(1, 4)
    assert VariantSpec("meanP", excitation="1-3").excitation == Fraction(1, 3)
    assert VariantSpec("meanP", aggregation=4).aggregation == Fraction(4)
    # tight excitation is always pre-cross, whatever the caller passed
    assert VariantSpec("tightTransf", excitation=Fraction(4)).excitation_pos == "pre"
    assert parse_variant_name("tightTransf_preE4").name == "tightTransf_E4"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"temporal": "maxP"}, "temporal must be one of"),
        ({"temporal": "meanP", "excitation": Fraction(1)}, "must not be 1"),
        ({"temporal": "meanP", "aggregation": Fraction(0)}, "must be positive"),
        ({"temporal": "meanP", "aggregation": Fraction(-2)}, "must be positive"),
        ({"temporal": "meanP", "excitation": Fraction(4), "excitation_pos": "pre"}, "meanP cannot have"),
        ({"temporal": "seqTransf", "excitation_pos": "pre"}, "requires an excitation"),
        ({"temporal": "tightTransf", "aggregation": Fraction(4)}, "tightTransf supports only excitation"),
        ({"temporal": "meanP", "masked": True}, "masked requires at least one"),
        ({"temporal": "seqLSTM", "excitation": Fraction(4), "excitation_pos": "mid"}, "excitation_pos must be"),
        ({"temporal": "meanP", "excitation": 1 / 3}, "not an exact short decimal"),
    ],
)
def test_invalid_specs_raise_with_rule(kwargs: dict, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        VariantSpec(**kwargs)


@pytest.mark.parametrize("bad", ["meanp", "meanP_E", "meanP_X4", "meanP_A4_E4", "seqTransf_E1-0", "meanP-masked"])
def test_bad_names_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_variant_name(bad)


def test_register_rejects_duplicates_and_get_suggests() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_variant("meanP_E4")
    with pytest.raises(KeyError, match="seqTransf_A1-4"):
        get_variant("seqTransf_A1-5")
    extra = VariantSpec("seqLSTM", excitation=Fraction(2), aggregation=Fraction(6), masked=True)
    try:
        entry = register_variant(extra)
        assert entry.rows == () and extra.name in list_variants("seqLSTM_E2*")
    finally:
        _REGISTRY.pop(extra.name, None)


def test_list_variants_patterns_exclude_and_table() -> None:
    st = list_variants("seqTransf*", exclude="*-masked")
    assert st[0] == "seqTransf" and all(n.startswith("seqTransf") and "masked" not in n for n in st)
    assert len(st) == 11 + 3 + 4  # main table + extra ratio rows (1/2, 1/3, 1/6) + 4 excitation_seq_aggregation
    both = list_variants(["meanP", "tightTransf"])
    assert both == ["meanP", "tightTransf"]
    assert list_variants("*", table="ratio-meanP-EA") == ["meanP_E2_A2", "meanP_E3_A3", "meanP_E4_A4", "meanP_E6_A6"]


def test_catalog_tables_and_sizes() -> None:
    sizes = {t: len(table_variants(t)) for t in list_tables()}
    assert sizes["meanP"] == 9  # baseline + 8 rows
    assert sizes["seqLSTM"] == sizes["seqTransf"] == 11  # baseline + 10 rows
    assert sizes["tightTransf"] == 3
    assert sizes["ratio-meanP-EA"] == sizes["ratio-seqLSTM-A"] == sizes["ratio-seqTransf-A"] == 4
    assert sizes["ratio-tightTransf-E"] == 5
    assert sizes["excitation-seq-aggregation"] == 8
    # masked: one per distinct non-baseline spec of the other tables
    distinct = {n for t in list_tables() if t != "masked" for n in table_variants(t)}
    assert sizes["masked"] == len([n for n in distinct if not parse_variant_name(n).is_baseline])
    assert all(n.endswith("-masked") for n in table_variants("masked"))


def test_catalog_labels_and_primary_rows() -> None:
    e = get_variant("seqTransf_A1-4")
    assert [(r.table, r.label) for r in e.rows] == [
        ("seqTransf", "(6) expand aggregation (1/4)"),
        ("ratio-seqTransf-A", "(6) expand aggregation (1/4)"),
    ]
    assert get_variant("meanP").label == "CLIP4Clip-meanP"
    assert get_variant("meanP_E4_A4").label == "(5) squeeze excitation-and-aggregation (4)"
    assert get_variant("meanP_E4_A4").tables == ("meanP", "ratio-meanP-EA")
    assert get_variant("seqLSTM_preE1-4").label == "(4) expand excitation + seq + meanP (1/4)"
    assert get_variant("seqTransf_A1-3").rows[0].label == "(6-3) expand aggregation (1/3)"
    assert get_variant("tightTransf_E1-6").rows[0].label == "(2-6) expand excitation (1/6)"
    assert get_variant("seqLSTM_preE4_A1-4").rows[0].dataset_scope == ("msrvtt",)
    assert get_variant("meanP_A4-masked").label == "masked: meanP (3) squeeze aggregation (4)"
    # mixed sub-types: squeeze_expand is E 4 / A 1/4, expand_squeeze E 1/4 / A 4
    assert get_variant("seqTransf_E4_A1-4").label.startswith("(9) squeeze excitation + expand aggregation")
    assert get_variant("seqTransf_E1-4_A4").label.startswith("(10) expand excitation + squeeze aggregation")
    # labels are unique within every table
    for t in list_tables():
        labels = [next(r.label for r in get_variant(n).rows if r.table == t) for n in table_variants(t)]
        assert len(labels) == len(set(labels)), t


def test_as_params_and_to_dict() -> None:
    spec = parse_variant_name("seqTransf_preE1-4_A4")
    p = spec.as_params()
    assert p == {
        "variant": "seqTransf_preE1-4_A4", "temporal": "seqTransf", "se_type": "excitation_seq_aggregation",
        "excitation": "1/4", "excitation_pos": "pre", "aggregation": "4", "masked": "false",
    }
    d = spec.to_dict()
    assert json.loads(json.dumps(d))["excitation"] == "1/4"
    assert parse_variant_name("meanP").as_params()["se_type"] == "none"
    assert parse_variant_name("seqLSTM_preE4").se_type == "excitation_seq"
    assert parse_variant_name("meanP_E4_A4").se_type == "excitation_aggregation"


def test_cli_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["variants", "meanP_E4_A1-4", "seqTransf", "tightTransf_E1-3", "--json"]) == 0
    recs = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    r = recs["meanP_E4_A1-4"]
    assert r["temporal"] == "meanP" and r["table"] == "meanP" and r["tables"] == ["meanP"]
    assert r["paper_label"] == "(7) squeeze excitation + expand aggregation (4 / 1/4)"
    assert r["excitation"] == {"type": "squeeze", "ratio": "4", "placement": "post"}
    assert r["aggregation"] == {"type": "expansion", "ratio": "1/4"}
    assert r["masked"] is False
    assert r["head_params"] == 87 + 1212
    d = 512  # seqTransf: 4 CLIP blocks (12 D^2 + 13 D each) + 77 x D position table
    assert recs["seqTransf"]["head_params"] == 4 * (12 * d * d + 13 * d) + 77 * d
    t = recs["tightTransf_E1-3"]
    assert t["table"] == "ratio-tightTransf-E" and t["excitation"]["placement"] == "pre"
    assert t["excitation"]["type"] == "expansion" and t["excitation"]["ratio"] == "1/3"
    assert main(["variants", "--tables", "--json"]) == 0
    tables = {x["table"]: x["variants"] for x in json.loads(capsys.readouterr().out)}
    assert tables["seqTransf"] == 11
    assert main(["variants", "seqTransf*", "--table", "ratio-seqTransf-A", "--json"]) == 0
    names = [x["name"] for x in json.loads(capsys.readouterr().out)]
    assert names == ["seqTransf_A1-2", "seqTransf_A1-3", "seqTransf_A1-4", "seqTransf_A1-6"]
    assert main(["variants", "--table", "nope"]) == 2
    assert "not a paper table" in capsys.readouterr().err
