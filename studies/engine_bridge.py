"""From a study's settings and one trial's choices to the engine's ``TrainConfig`` (and back to a CLI line).

``make_config`` is the default config factory of every study; ``retrain_command`` writes the
``eabench train`` command line that reproduces one trial outside the study. Both read the
names of ``TrainConfig``'s fields, so a field added to the engine is a study option at once.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from harness.errors import ConfigError
from harness.train import TrainConfig, resolve_plan
from studies.context import StudyContext

__all__ = [
    "STUDY_FIELDS",
    "check_train_options",
    "format_override",
    "make_config",
    "retrain_command",
    "train_flag",
    "validate_config",
]

# TrainConfig fields that the study sets from its own settings for every trial; every other field
# is a train option (``StudyContext.train_options``) that a study may fix for all of its trials.
STUDY_FIELDS = frozenset({"variant", "dataset", "root", "protocol", "seed", "overrides", "tracking_root",
                          "tracking_uri", "experiment", "progress", "resume"})
# Preset fields that TrainConfig also carries as first-class fields (they win over --set there).
_FIELD_OVERRIDES = ("epochs", "batch_size")


def train_flag(field: str) -> str:
    """The ``eabench train`` flag of a TrainConfig field: ``batch_size`` -> ``--batch-size``.

    harness.train.cli names every flag after its field this way (``overrides`` is ``--set`` and
    ``progress`` is ``--no-progress``, both set by the study itself).
    """
    return "--" + field.replace("_", "-")


def check_train_options(names: Iterable[str]) -> None:
    """Raise ConfigError for a name that is not a TrainConfig field a study may set."""
    allowed = TrainConfig.field_names() - STUDY_FIELDS
    bad = sorted(set(names) - allowed)
    if bad:
        raise ConfigError(f"unknown train option(s) {', '.join(bad)}; a study may set: {', '.join(sorted(allowed))}")


def make_config(ctx: StudyContext, variant: str, seed: int, overrides: Mapping[str, str]) -> TrainConfig:
    """The TrainConfig of one trial: study settings + ``--set`` + the trial's own choices."""
    options = dict(ctx.train_options)
    check_train_options(options)
    merged = {**ctx.sets_dict, **{k: str(v) for k, v in overrides.items()}}
    for key in _FIELD_OVERRIDES:  # a searched batch size must not lose to a fixed --batch-size
        if key in merged:
            options[key] = int(float(merged.pop(key)))
    return TrainConfig(
        variant=variant,
        dataset=ctx.dataset,
        root=ctx.root,
        protocol=ctx.protocol,
        seed=int(seed),
        overrides=tuple(sorted(merged.items())),
        tracking_root=ctx.runs_root,
        tracking_uri=ctx.tracking_uri,
        experiment=ctx.experiment,
        progress=False,  # the study draws its own live display; worker processes must not animate
        **options,
    )


def validate_config(cfg: Any, nproc_per_trial: int = 1) -> None:
    """Check a config before the study starts (unknown variant, missing root or weights, a batch
    that ``nproc_per_trial`` processes cannot split...)."""
    if not isinstance(cfg, TrainConfig):
        if nproc_per_trial > 1:
            raise ConfigError(f"--nproc-per-trial {nproc_per_trial} runs the engine under torchrun and needs its "
                              f"TrainConfig; the config factory made a {type(cfg).__name__}")
        return
    plan = resolve_plan(cfg)
    k, p = nproc_per_trial, plan.preset
    if k > 1 and p.batch_size % k:
        raise ConfigError(f"--nproc-per-trial {k}: the batch size {p.batch_size} of {cfg.variant} is not divisible "
                          f"by {k} processes; change --batch-size or --nproc-per-trial")
    if k > 1 and not plan.spec.loose and p.emulate_gpus % k:
        raise ConfigError(f"--nproc-per-trial {k}: {cfg.variant} emulates {p.emulate_gpus} GPU(s), which {k} "
                          f"processes cannot hold whole; use --set emulate_gpus=N with N a multiple of {k}")


def retrain_command(ctx: StudyContext, variant: str, seed: int, overrides: Mapping[str, Any]) -> str:
    """``eabench train ...`` reproducing one trial (same data, protocol, seed and hyperparameters)."""
    options = dict(ctx.train_options)
    check_train_options(options)
    merged = {**ctx.sets_dict, **{k: format_override(v) for k, v in overrides.items()}}
    for key in _FIELD_OVERRIDES:
        if key in merged:
            options[key] = merged.pop(key)
    head = {"variant": variant, "dataset": ctx.dataset, "root": ctx.root, "protocol": ctx.protocol, "seed": seed}
    argv = ["eabench", "train", *(a for key, value in head.items() for a in (train_flag(key), str(value)))]
    argv += _flags(options)
    for key, value in sorted(merged.items()):
        argv += ["--set", f"{key}={value}"]
    argv += _flags({"tracking_root": ctx.runs_root, "tracking_uri": ctx.tracking_uri, "experiment": ctx.experiment})
    return shlex.join(argv)


def _flags(values: Mapping[str, Any]) -> list[str]:
    """The ``eabench train`` flags of some TrainConfig fields, in field order; defaults left out."""
    out: list[str] = []
    for f in fields(TrainConfig):
        if f.name not in values or values[f.name] is None or values[f.name] == f.default:
            continue
        value = values[f.name]
        out += [train_flag(f.name)] if value is True else [train_flag(f.name), str(value)]  # True: store_true
    return out


def format_override(value: Any) -> str:
    """The ``--set`` string of a value: full float precision, so a retrain uses the exact value."""
    if isinstance(value, float):
        return repr(value)
    return str(value)
