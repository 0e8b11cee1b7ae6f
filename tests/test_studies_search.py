"""Search studies: the space (default and file), the retrain command, and pruning with the real engine."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest_studies import child_runs, make_ctx, mlflow_client, store, synth  # noqa: F401
from optuna.trial import TrialState

from harness.errors import ConfigError
from studies.engine_bridge import check_train_options, make_config, retrain_command, train_flag
from studies.search import SearchSettings, prepare_search_study, run_search_study
from studies.space import RATIO_CHOICES, Param, SearchSpace, default_space, design_of, fill_design, load_space_file


def test_design_of_blanks_ratios_and_build_fills_them_back() -> None:
    assert design_of("meanP_E4_A1-4") == "meanP_E*_A*"
    assert design_of("seqTransf_preE1-4-masked") == "seqTransf_preE*-masked"
    assert design_of("tightTransf") == "tightTransf"
    assert fill_design("meanP_E*_A*", "1-3", "6") == "meanP_E1-3_A6"
    assert fill_design("seqTransf_preE*-masked", "2", None) == "seqTransf_preE2-masked"
    assert fill_design("meanP_A*", None, "1-6") == "meanP_A1-6"


def test_default_space_for_a_pattern() -> None:
    space = default_space("meanP_E*", batch_size=64, max_frames=12)
    # meanP_E4, meanP_E1-4 -> one design; meanP_E4_A4 ... -> another; fnmatch also matches -masked
    assert set(space.designs) == {"meanP_E*", "meanP_E*_A*", "meanP_E*-masked", "meanP_E*_A*-masked"}
    assert space.conditional  # the aggregation ratio exists for one design only
    assert set(space.excitation_ratio) <= set(RATIO_CHOICES) and "4" in space.excitation_ratio
    by_name = {p.name: p for p in space.params}
    assert by_name["lr"].low == 1e-5 and by_name["lr"].high == 1e-2 and by_name["lr"].log
    assert (by_name["weight_decay"].low, by_name["weight_decay"].high) == (0.0, 0.3)
    assert (by_name["warmup_proportion"].low, by_name["warmup_proportion"].high) == (0.0, 0.3)
    assert by_name["batch_size"].choices == (16, 32, 64)
    # With 4 frames a squeeze by 6 leaves no hidden unit (PAPER.md §2.4: width T // r), so it is dropped.
    small = default_space("meanP_A*", batch_size=64, max_frames=4)
    assert "6" not in small.aggregation_ratio and {"2", "4", "1-6"} <= set(small.aggregation_ratio)
    with pytest.raises(ConfigError, match="matches no registered variant"):
        default_space("nosuch*", batch_size=64, max_frames=12)


def test_space_suggests_valid_variants() -> None:
    space = default_space("meanP_E*", batch_size=64, max_frames=12)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        variant, overrides = space.suggest(trial)
        seen.add(design_of(variant))
        assert variant.startswith("meanP_E")
        assert ("_A" in variant) == ("aggregation_ratio" in trial.params)
        assert 1e-5 <= overrides["lr"] <= 1e-2 and overrides["batch_size"] in (16, 32, 64)
        study.tell(trial, 1.0)
    assert {"meanP_E*", "meanP_E*_A*"} <= seen


def test_space_file_overrides_defaults(tmp_path: Path) -> None:
    base = default_space("meanP_A*", batch_size=64, max_frames=12)
    f = tmp_path / "space.yaml"
    f.write_text("variant: [meanP_A4, meanP_A1-4]\nlr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                 "weight_decay: null\nepochs: 3\nbatch_size: [8, 16]\ncoef_lr: {low: 0.01, high: 0.1}\n")
    space = load_space_file(f, base)
    assert space.variants == ("meanP_A4", "meanP_A1-4")
    names = {p.name: p for p in space.params}
    assert "weight_decay" not in names and names["lr"].low == 1e-4 and names["batch_size"].choices == (8, 16)
    assert names["coef_lr"].high == 0.1 and dict(space.fixed) == {"epochs": 3}
    study = optuna.create_study(direction="maximize")
    variant, overrides = space.suggest(study.ask())
    assert variant in ("meanP_A4", "meanP_A1-4") and overrides["epochs"] == 3

    bad = tmp_path / "bad.json"
    bad.write_text('{"learning_rate": [1, 2]}')
    with pytest.raises(ConfigError, match=r"bad\.json: unknown parameter 'learning_rate'"):
        load_space_file(bad, base)
    bad.write_text('{"lr": {"low": 1, "high": 0.5}}')
    with pytest.raises(ConfigError, match=r"bad\.json: lr: low \(1\) must be below high"):
        load_space_file(bad, base)
    bad.write_text('{"aggregation_ratio": ["1"]}')
    with pytest.raises(ConfigError, match="must be positive and not 1"):
        load_space_file(bad, base)


def test_make_config_and_retrain_command(tmp_path: Path) -> None:
    from studies.context import StudyContext
    from studies.storage import resolve_storage

    ctx = StudyContext(study_name="s", kind="search", storage=resolve_storage(None, "s"), dataset="synthetic",
                       root="/data/synth", protocol="frozen", sets=(("max_frames", "4"),),
                       train_options=(("epochs", 2), ("device", "cpu")))
    cfg = make_config(ctx, "meanP_A4", 7, {"lr": "0.001", "batch_size": "16"})
    assert cfg.variant == "meanP_A4" and cfg.seed == 7 and cfg.batch_size == 16 and cfg.epochs == 2
    assert dict(cfg.overrides) == {"max_frames": "4", "lr": "0.001"} and cfg.progress is False
    cmd = retrain_command(ctx, "meanP_A4", 7, {"lr": 0.00123456789, "batch_size": 16})
    assert cmd == ("eabench train --variant meanP_A4 --dataset synthetic --root /data/synth --protocol frozen "
                   "--seed 7 --epochs 2 --batch-size 16 --device cpu --set lr=0.00123456789 --set max_frames=4")


def test_train_options_are_train_config_fields_with_their_eabench_train_flags() -> None:
    import argparse

    from harness.cli import build_parser
    from harness.train import TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {o for a in sub.choices["train"]._actions for o in a.option_strings}
    # --set and --no-progress are the two flags not named after their field
    assert {train_flag(f) for f in TrainConfig.field_names() - {"overrides", "progress"}} <= flags
    with pytest.raises(ConfigError, match="unknown train option.*epoch"):
        check_train_options(["epoch"])
    with pytest.raises(ConfigError, match="seed"):
        check_train_options(["seed"])  # the study sets each trial's seed itself
    from studies.context import StudyContext
    from studies.storage import resolve_storage

    ctx = StudyContext(study_name="s", kind="table", storage=resolve_storage(None, "s"), dataset="synthetic",
                       root="/d", train_options=(("compile", True), ("limit_test", 8), ("keep_last", False)))
    assert retrain_command(ctx, "meanP", 42, {}).endswith("--seed 42 --compile --limit-test 8")


def test_search_prunes_a_destroyed_trial_and_reports_the_best(synth: Path, store: Path, tmp_path: Path) -> None:
    """A designed-to-be-bad space: seqTransf heads with learning rates up to 100 (which wreck the
    temporal transformer within an epoch). The first trial is enqueued with a sane rate so the
    median pruner has a reference; the bad rates then fall below it after epoch 1 and are pruned."""
    space = SearchSpace(designs=("seqTransf",), params=(Param("lr", low=1e-4, high=100.0, log=True),),
                        fixed=(("warmup_proportion", 0.0),))
    settings = SearchSettings(space=space, n_trials=4, n_startup_trials=1, seed=42)
    ctx = make_ctx(synth, store, tmp_path, kind="search")
    prepare_search_study(ctx, settings)
    study = ctx.open_study(create=False)
    for lr in (1e-4, 20.0, 50.0, 100.0):
        study.enqueue_trial({"design": "seqTransf", "lr": lr})
    result = run_search_study(ctx, settings)

    states = {t.number: t.state for t in result.trials}
    assert len(states) == 4 and states[0] == TrialState.COMPLETE
    pruned = [t for t in result.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in result.trials]
    client = mlflow_client(store)
    for t in pruned:
        assert t.params["lr"] >= 20.0 and t.user_attrs["pruned_at_epoch"] == 1
        # Pruned below the median of the completed trials at that epoch.
        assert t.intermediate_values[1] < result.trials[0].intermediate_values[1]
        run = [r for r in child_runs(store, result.parent_run_id)
               if r.data.tags.get("optuna.trial") == str(t.number)]
        assert len(run) == 1 and run[0].info.status == "KILLED"
    assert result.best is not None and result.best["value"] == max(
        t.value for t in result.trials if t.state == TrialState.COMPLETE)
    assert result.best["command"].startswith("eabench train --variant seqTransf --dataset synthetic")
    assert f"--set lr={result.best['params']['lr']!r}" in result.best["command"]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["best_command"] == result.best["command"]
    assert parent.data.metrics["study/pruned"] == len(pruned)
