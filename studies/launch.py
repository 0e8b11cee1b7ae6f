"""Starting a study from what a user asks for: a paper table, or a search over a variant pattern.

``table_study`` and ``search_study`` are what the ``eabench study table|search`` commands run and
what ``eabench reproduce`` (or a notebook) calls directly::

    opts = StudyOptions(dataset="synthetic", root="data/synthetic", train_options=(("epochs", 1),))
    result = table_study(opts, "meanP")

They name the study, pick its variants, build its :class:`~studies.context.StudyContext` and run
it with the leaderboard on stderr; the result carries the trials and the coverage or best trial.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.console import progress_enabled
from harness.errors import ConfigError
from harness.presets import get_preset, override
from harness.tracking import DEFAULT_EXPERIMENT
from harness.train import Protocol
from studies.context import DEFAULT_CONFIG_FACTORY, DEFAULT_TRAINER, StudyContext
from studies.engine_bridge import check_train_options
from studies.gpus import WorkerPlan, parse_gpus, plan_workers, visible_gpus
from studies.grid import DEFAULT_SEEDS, select_variants
from studies.search import SearchResult, SearchSettings, run_search_study
from studies.space import default_space, load_space_file
from studies.storage import resolve_storage
from studies.table import TableStudyResult, run_table_study
from studies.liveness import DEFAULT_STALE_AFTER_S

__all__ = ["StudyOptions", "search_study", "slug", "table_study"]


def slug(text: str) -> str:
    """A study name safe for file names (the journal file is named after the study)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


@dataclass(frozen=True)
class StudyOptions:
    """What every study takes, whatever it trains: data, protocol, storage, tracking, workers.

    ``sets`` are preset overrides (``--set key=value``) and ``train_options`` TrainConfig fields
    (``epochs``, ``device``, ...) for every trial. ``study_name`` None derives one from the request.
    ``progress``: redraw the leaderboard in place when stderr is a terminal (else log lines).
    ``workers``, ``gpus`` (``"0,1,2,3"``, indices, ``"none"``; None: every visible GPU) and
    ``nproc_per_trial`` combine as :mod:`studies.gpus` says (:meth:`worker_plan`).
    """

    dataset: str = "synthetic"
    root: str = "."
    protocol: str = Protocol.FROZEN.value
    workers: int | None = None
    gpus: str | tuple[int, ...] | None = None
    nproc_per_trial: int = 1
    storage: str | None = None
    study_name: str | None = None
    sets: tuple[tuple[str, str], ...] = ()
    train_options: tuple[tuple[str, Any], ...] = ()
    runs_root: str = "runs"
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    trainer: Any = DEFAULT_TRAINER
    config_factory: Any = DEFAULT_CONFIG_FACTORY
    progress: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in {p.value for p in Protocol}:
            raise ConfigError(f"protocol {self.protocol!r}: choose {' or '.join(p.value for p in Protocol)}")
        check_train_options(k for k, _ in self.train_options)
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.nproc_per_trial < 1:
            raise ConfigError("--nproc-per-trial must be at least 1")

    def _gpus(self) -> tuple[int, ...] | None:
        gpus = parse_gpus(self.gpus) if isinstance(self.gpus, str) else self.gpus
        if gpus is None and str(dict(self.train_options).get("device") or "auto").startswith("cpu"):
            return ()  # --device cpu: nothing to pin
        return None if gpus is None else tuple(gpus)

    def _train_options(self) -> tuple[tuple[str, Any], ...]:
        """``train_options``, with ``device=cpu`` added for ``--gpus none`` (else "auto" would pick CUDA)."""
        if self._gpus() == () and "device" not in dict(self.train_options):
            return (*self.train_options, ("device", "cpu"))
        return tuple(self.train_options)

    def worker_plan(self) -> WorkerPlan:
        """The study's workers and their GPUs on this host (rules: :mod:`studies.gpus`)."""
        gpus = self._gpus()
        visible = visible_gpus() if gpus != () else []
        return plan_workers(workers=self.workers, gpus=gpus, nproc_per_trial=self.nproc_per_trial, visible=visible)

    @property
    def live(self) -> bool:
        """Whether the leaderboard redraws in place (a terminal, not CI, progress wanted)."""
        return self.progress and progress_enabled()

    def context(self, *, kind: str, name: str, table: str | None = None) -> StudyContext:
        """The study's context; ``name`` is used unless ``study_name`` was given."""
        name = slug(self.study_name or name)
        return StudyContext(
            study_name=name, kind=kind, storage=resolve_storage(self.storage, name, Path(self.runs_root)),
            dataset=self.dataset, root=str(self.root), protocol=self.protocol, runs_root=str(self.runs_root),
            tracking_uri=self.tracking_uri, experiment=self.experiment, sets=tuple(self.sets), table=table,
            trainer=self.trainer, config_factory=self.config_factory, stale_after_s=self.stale_after_s,
            train_options=self._train_options(), nproc_per_trial=self.nproc_per_trial,
        )


def table_study(options: StudyOptions, table: str | None = None, *, variants: str | Sequence[str] | None = None,
                seeds: int = 1) -> TableStudyResult:
    """Train every variant of ``table`` (or the ``variants`` given: names or fnmatch patterns, a subset
    of the table when both are given) with ``seeds`` seeds each, resuming what a study of the same
    name already finished. Default name: ``<table>-<dataset>-<protocol>``."""
    if not 1 <= seeds <= len(DEFAULT_SEEDS):
        raise ConfigError(f"--seeds must be between 1 and {len(DEFAULT_SEEDS)}")
    spec = variants if variants is None or isinstance(variants, str) else ",".join(variants)
    names = select_variants(table, spec)
    if table and not spec:
        name = f"{table}-{options.dataset}-{options.protocol}"
    else:  # a subset or a free list: its own study, named by what it holds
        digest = hashlib.sha1(",".join(names).encode()).hexdigest()[:8]
        name = f"{table or 'variants'}-{digest}-{options.dataset}-{options.protocol}"
    layout = options.worker_plan()
    ctx = options.context(kind="table", name=name, table=table)
    return run_table_study(ctx, names, DEFAULT_SEEDS[:seeds], workers=layout, board=True, live=options.live)


def search_study(options: StudyOptions, variants: str, *, space_file: Path | None = None, n_trials: int = 20,
                 timeout_s: float | None = None, seed: int = 42, sampler_seed: int = 0,
                 n_startup_trials: int = 5) -> SearchResult:
    """TPE search over the variants matching ``variants`` (comma-separated fnmatch patterns) and the
    training hyperparameters of :func:`studies.space.default_space`, changed by ``space_file``.
    Default name: ``search-<variants>-<dataset>-<protocol>``."""
    if n_trials < 1:
        raise ConfigError("--n-trials must be at least 1")
    preset = override(get_preset(options.dataset), dict(options.sets))
    batch_size = dict(options.train_options).get("batch_size") or preset.batch_size
    space = default_space(variants, batch_size=batch_size, max_frames=preset.max_frames)
    if space_file is not None:
        space = load_space_file(space_file, space)
    layout = options.worker_plan()
    ctx = options.context(kind="search", name=f"search-{variants}-{options.dataset}-{options.protocol}")
    settings = SearchSettings(space=space, n_trials=n_trials, timeout_s=timeout_s, seed=seed,
                              sampler_seed=sampler_seed, n_startup_trials=n_startup_trials)
    return run_search_study(ctx, settings, workers=layout, board=True, live=options.live)
