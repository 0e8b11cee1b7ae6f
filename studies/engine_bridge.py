"""From a study's settings and one trial's choices to the engine's ``TrainConfig`` (and back to a CLI line).

``make_config`` is the default config factory of every study; ``retrain_command`` writes the
``eabench train`` command line that reproduces one trial outside the study.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from studies.context import StudyContext

__all__ = ["TRAIN_OPTION_FLAGS", "format_override", "make_config", "retrain_command", "validate_config"]

# TrainConfig fields that a study may set for all of its trials, and their `eabench train` flags.
TRAIN_OPTION_FLAGS: dict[str, str] = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "device": "--device",
    "numerics": "--numerics",
    "optimizer": "--optimizer",
    "backbone": "--backbone",
    "weights": "--weights",
    "videos": "--videos",
    "cache_dir": "--cache-dir",
    "eval_batch_size": "--eval-batch-size",
    "workers": "--workers",
    "limit_train": "--limit-train",
    "limit_test": "--limit-test",
}
# Preset fields that TrainConfig also carries as first-class fields (they win over --set there).
_FIELD_OVERRIDES = ("epochs", "batch_size")


def make_config(ctx: StudyContext, variant: str, seed: int, overrides: Mapping[str, str]) -> Any:
    """The TrainConfig of one trial: study settings + ``--set`` + the trial's own choices."""
    from harness.engine import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    options = {k: v for k, v in ctx.train_options if k in known}
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


def validate_config(cfg: Any) -> None:
    """Check a config before the study starts (unknown variant, missing root or weights...)."""
    from harness.engine import TrainConfig, resolve_config

    if isinstance(cfg, TrainConfig):
        resolve_config(cfg)


def retrain_command(ctx: StudyContext, variant: str, seed: int, overrides: Mapping[str, Any]) -> str:
    """``eabench train ...`` reproducing one trial (same data, protocol, seed and hyperparameters)."""
    options = dict(ctx.train_options)
    merged = {**ctx.sets_dict, **{k: _fmt(v) for k, v in overrides.items()}}
    for key in _FIELD_OVERRIDES:
        if key in merged:
            options[key] = merged.pop(key)
    argv = ["eabench", "train", "--variant", variant, "--dataset", ctx.dataset, "--root", ctx.root,
            "--protocol", ctx.protocol, "--seed", str(seed)]
    for key, flag in TRAIN_OPTION_FLAGS.items():
        if options.get(key) is not None:
            argv += [flag, str(options[key])]
    for key, value in sorted(merged.items()):
        argv += ["--set", f"{key}={value}"]
    if ctx.runs_root != "runs":
        argv += ["--tracking-root", ctx.runs_root]
    if ctx.tracking_uri:
        argv += ["--tracking-uri", ctx.tracking_uri]
    if ctx.experiment != "eabench":
        argv += ["--experiment", ctx.experiment]
    return shlex.join(argv)


def _fmt(value: Any) -> str:
    return format_override(value)


def format_override(value: Any) -> str:
    """The ``--set`` string of a value: full float precision, so a retrain uses the exact value."""
    if isinstance(value, float):
        return repr(value)
    return str(value)
