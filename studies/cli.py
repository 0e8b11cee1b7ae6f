"""`eabench study table|tables|search`: Optuna studies of paper tables and hyperparameter searches.

Thin wrappers over :mod:`studies.launch`: the final leaderboard (or ``--json``) and listings go to
stdout; logs, the live leaderboard and hints go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from harness.console import get_console, output_console
from harness.errors import ConfigError
from harness.presets import parse_assignment
from harness.tracking import DEFAULT_EXPERIMENT, mlflow_ui_command, resolve_uri, runs_table_url
from harness.train import Protocol
from studies.context import DEFAULT_CONFIG_FACTORY, DEFAULT_TRAINER, StudyContext
from studies.engine_bridge import train_flag
from studies.launch import StudyOptions, search_study, table_study
from studies.leaderboard import leaderboard_rows, render_table
from studies.logs import setup_logging
from studies.search import SearchResult
from studies.storage import dashboard_command
from studies.table import TableStudyResult
from studies.liveness import DEFAULT_STALE_AFTER_S
from studies.workers import interrupt_on_sigterm
from variants import get_variant, list_tables, table_variants

__all__ = ["register"]

_BROWSE = """\
GPUs: --gpus 0,1,2,3 --nproc-per-trial 2 runs 2 workers on GPUs {0,1} and {2,3}, each trial a
torchrun job of 2 processes; --gpus left out: every visible GPU (one worker per
--nproc-per-trial GPUs); --workers N alone: the first N x K GPUs; --gpus none: the CPU.

Browse the results:
  optuna-dashboard runs/studies/STUDY.journal        (or the --storage URL)
  mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --port 5000
Several hosts: one PostgreSQL --storage postgresql+psycopg2://USER@HOST:5432/DB, one MLflow server
(--tracking-uri http://HOST:5000), and the same command with the same --study-name on every host
(docs/STUDIES.md has the recipe and a SLURM array script).
"""

_TABLE_EPILOG = """\
Each trial trains one variant with one seed (an Optuna GridSampler over the table's variants x
seeds, grid seed 0 in every worker, no pruning); its value is the best epoch's T2V R@1. One MLflow
parent run per study, one child run per trial. Rerun the same command to resume: finished trials
are kept, trials of killed workers are failed and their cells queued again, and a final coverage
check makes sure every cell has exactly one finished trial.

Default storage: the journal file runs/studies/<study>.journal (one host, any --workers).

""" + _BROWSE

_SEARCH_EPILOG = """\
Default search space (see --space for a file that changes it):
  design             the variants matching --variants with their ratios blanked (meanP_E*_A*, ...)
  excitation_ratio   squeeze 2 3 4 6 / expansion 1-2 1-3 1-4 1-6 (designs with an E block)
  aggregation_ratio  the same fractions (designs with an A block)
  lr                 head learning rate, log-uniform [1e-5, 1e-2]
  weight_decay       uniform [0, 0.3]
  warmup_proportion  uniform [0, 0.3]
  batch_size         {B/4, B/2, B} of the preset's batch B

--space FILE (YAML or JSON) maps parameter names to a list (categorical), {low, high[, log,
step, type: int]} (a range), a scalar (fixed for every trial) or null (drop a default). Names:
design, variant (exact variant names), excitation_ratio, aggregation_ratio, or any preset field
(lr, coef_lr, weight_decay, warmup_proportion, batch_size, epochs, ...). Example:
  variant: [meanP_A4, meanP_A1-4]
  lr: {low: 1.0e-5, high: 1.0e-3, log: true}
  epochs: 3

TPE (Optuna 5 defaults: multivariate, constant liar; worker i samples with seed SAMPLER_SEED+i),
median pruning on per-epoch T2V R@1 after the first epoch; pruned runs end KILLED in MLflow.
At the end: the best trial, its parameters, the `eabench train` command that retrains it, and
the importance of each parameter.

""" + _BROWSE


# TrainConfig fields that every trial of a study shares: flag and dest are the field's own name,
# as in `eabench train` (studies.engine_bridge.train_flag).
_TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "epochs": {"type": int},
    "batch_size": {"type": int},
    "device": {"help": "auto, cpu, cuda or cuda:N"},
    "weights": {"help": "CLIP checkpoint file"},
    "cache_dir": {"help": "frame/feature cache root"},
    "limit_train": {"type": int, "help": "first N training videos (quick runs)"},
    "limit_test": {"type": int, "help": "first N test videos (quick runs)"},
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic", help="dataset preset: msrvtt, didemo, activitynet, synthetic")
    p.add_argument("--root", required=True, type=Path, help="folder with the dataset's annotation files")
    p.add_argument("--protocol", choices=[x.value for x in Protocol], default=Protocol.FROZEN.value,
                   help="paper: full fine-tuning; frozen: cached CLIP features, heads only (default)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes on this host (default: one per --nproc-per-trial GPUs of --gpus, "
                        "or 1 without GPUs); with --gpus it may only repeat that number")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="GPU indices to use, e.g. 0,1,2,3 or 0-3 (default: every visible GPU; 'none': the CPU); "
                        "each worker gets --nproc-per-trial of them")
    p.add_argument("--nproc-per-trial", type=int, default=1, metavar="K",
                   help="processes that train one trial (K > 1: a torchrun job with DDP; default 1)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: a .journal file or postgresql+psycopg2://USER@HOST/DB "
                        "(default runs/studies/<study>.journal)")
    p.add_argument("--study-name", default=None, help="default: derived from the table/pattern, dataset, protocol")
    p.add_argument("--set", dest="overrides", type=parse_assignment, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a preset field for every trial (repeatable), e.g. max_frames=4")
    for name, kw in _TRAIN_OPTIONS.items():
        p.add_argument(train_flag(name), default=None, **kw)
    p.add_argument("--tracking-root", default="runs", help="folder of mlflow.db, artifacts and journals")
    p.add_argument("--tracking-uri", default=None, help="MLflow store or server (default sqlite under --tracking-root)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    p.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER_S, metavar="SECONDS",
                   help="a RUNNING trial of another host whose heartbeat is this old is presumed dead, failed "
                        "and queued again (running trials beat every min(60, SECONDS/5) s; default 300)")
    p.add_argument("--trainer", default=DEFAULT_TRAINER, metavar="MODULE:FUNCTION",
                   help="training function with run_training's signature (default: the engine)")
    p.add_argument("--config-factory", default=DEFAULT_CONFIG_FACTORY, metavar="MODULE:FUNCTION",
                   help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of the live display")
    p.add_argument("--json", action="store_true", help="print the final leaderboard as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true")


def register(subparsers: Any) -> None:
    study = subparsers.add_parser("study", help="Optuna studies: paper tables and hyperparameter searches",
                                  description="Optuna studies over the variant registry.")
    sub = study.add_subparsers(dest="study_command", metavar="SUBCOMMAND")

    t = sub.add_parser("table", help="train every variant of a paper table (x seeds), resumable and parallel",
                       epilog=_TABLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("table", nargs="?", default=None, help="a catalog table (`eabench study tables` lists them)")
    t.add_argument("--variants", default=None,
                   help="comma-separated names or fnmatch patterns: a subset of TABLE, or without TABLE "
                        "any registered variants")
    t.add_argument("--seeds", type=int, default=1, help="seeds per variant: 42, 43, ... (default 1)")
    _common(t)
    t.set_defaults(func=_table)

    ls = sub.add_parser("tables", help="list the catalog's tables and their variant counts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_tables)

    s = sub.add_parser("search", help="TPE hyperparameter search with median pruning",
                       epilog=_SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--variants", required=True, metavar="PATTERN",
                   help="fnmatch pattern(s), comma-separated, e.g. 'meanP_*' or 'seqTransf_A*,meanP_A*'")
    s.add_argument("--n-trials", type=int, default=20, help="trials in the study (all workers together)")
    s.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    s.add_argument("--space", type=Path, default=None, metavar="FILE", help="YAML/JSON search space (see below)")
    s.add_argument("--seed", type=int, default=42, help="training seed of every trial")
    s.add_argument("--sampler-seed", type=int, default=0, help="TPE seed of worker 0 (worker i: +i)")
    s.add_argument("--n-startup-trials", type=int, default=5,
                   help="random trials before TPE; completed trials before pruning starts")
    _common(s)
    s.set_defaults(func=_search)

    study.set_defaults(func=lambda args: (study.print_help(sys.stderr), 2)[1])


# ------------------------------------------------------------------------------------------- helpers
def _options(args: argparse.Namespace) -> StudyOptions:
    train_options = {name: getattr(args, name) for name in _TRAIN_OPTIONS}
    if args.stale_after <= 0:
        raise ConfigError(f"--stale-after {args.stale_after}: must be a positive number of seconds")
    return StudyOptions(
        dataset=args.dataset, root=str(args.root), protocol=args.protocol, workers=args.workers,
        gpus=args.gpus, nproc_per_trial=args.nproc_per_trial,
        storage=args.storage, study_name=args.study_name, sets=tuple(args.overrides),
        train_options=tuple((k, v) for k, v in train_options.items() if v is not None),
        runs_root=str(args.tracking_root), tracking_uri=args.tracking_uri, experiment=args.experiment,
        stale_after_s=args.stale_after, trainer=args.trainer, config_factory=args.config_factory,
        progress=not args.no_progress,
    )




def _finish(args: argparse.Namespace, result: TableStudyResult | SearchResult, show_params: bool = False) -> None:
    """The final leaderboard (or ``--json``) on stdout; where to browse the study on stderr."""
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        table = render_table(leaderboard_rows(result.trials), title=result.title, show_params=show_params)
        output_console().print(table)
    if result.context is not None:
        log = get_console()
        for line in browse_hints(result.context, getattr(result, "experiment_id", None)):
            log.print(line, highlight=False, soft_wrap=True)


def browse_hints(ctx: StudyContext, experiment_id: str | None = None) -> list[str]:
    """Where to look at a study (logged to stderr); storage and tracking URIs without secrets."""
    uri = resolve_uri(ctx.runs_root, ctx.tracking_uri)
    hints = [f"optuna-dashboard: {dashboard_command(ctx.storage)}", f"mlflow ui: {mlflow_ui_command(uri)}"]
    if experiment_id:
        hints.append(f"runs table: {runs_table_url(experiment_id, base=uri)}")
    return hints


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the study like Ctrl-C while it runs (studies.workers.interrupt_on_sigterm)."""
    previous = interrupt_on_sigterm()
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------ commands
def _table(args: argparse.Namespace) -> int:
    setup_logging(verbose=args.verbose)
    with _sigterm_interrupts():
        result = table_study(_options(args), args.table, variants=args.variants, seeds=args.seeds)
    _finish(args, result)
    return 0 if not result.coverage.missing else 1


def _tables(args: argparse.Namespace) -> int:
    rows = []
    for table in list_tables():
        names = table_variants(table)
        first = next((r for r in get_variant(names[0]).rows if r.table == table), None) if names else None
        rows.append({"table": table, "variants": len(names), "names": names,
                     "datasets": list(first.dataset_scope) if first else []})
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    out = Table(title="paper tables (eabench study table TABLE ...)")
    out.add_column("table")
    out.add_column("variants", justify="right")
    out.add_column("names")
    for r in rows:
        shown = ", ".join(r["names"][:6]) + (", ..." if len(r["names"]) > 6 else "")
        out.add_row(r["table"], str(r["variants"]), shown)
    output_console().print(out)
    return 0


def _search(args: argparse.Namespace) -> int:
    setup_logging(verbose=args.verbose)
    with _sigterm_interrupts():
        result = search_study(_options(args), args.variants, space_file=args.space, n_trials=args.n_trials,
                              timeout_s=args.timeout, seed=args.seed, sampler_seed=args.sampler_seed,
                              n_startup_trials=args.n_startup_trials)
    _finish(args, result, show_params=True)
    if result.best and not args.json:  # with --json, these are in the JSON
        out = output_console()
        out.print(f"best trial {result.best['number']}: T2V R@1 {result.best['value']:.2f} "
                  f"({result.best['variant']}, {result.best['params']})", highlight=False)
        out.print(f"retrain: {result.best['command']}", highlight=False, soft_wrap=True)
        for k, v in result.importances.items():
            out.print(f"importance {k}: {v:.3f}", highlight=False)
    return 0 if result.best else 1
