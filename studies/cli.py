"""`eabench study table|tables|search`: Optuna studies of paper tables and hyperparameter searches.

Thin wrappers over :mod:`studies.table` and :mod:`studies.search`; logs and the live leaderboard
go to stderr, ``--json`` output to stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_BROWSE = """\
Browse the results:
  optuna-dashboard runs/studies/STUDY.journal        (or the --storage URL)
  mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --port 5000
Several hosts: start the first host, then on every other one run the same command with the same
--storage postgresql+psycopg2://USER@HOST:5432/DB and --study-name.
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


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic", help="dataset preset: msrvtt, didemo, activitynet, synthetic")
    p.add_argument("--root", required=True, type=Path, help="folder with the dataset's annotation files")
    p.add_argument("--protocol", choices=("paper", "frozen"), default="frozen",
                   help="paper: full fine-tuning; frozen: cached CLIP features, heads only (default)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this host (default 1)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: a .journal file or postgresql+psycopg2://USER@HOST/DB "
                        "(default runs/studies/<study>.journal)")
    p.add_argument("--study-name", default=None, help="default: derived from the table/pattern, dataset, protocol")
    p.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field for every trial (repeatable), e.g. max_frames=4")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--weights", default=None, help="CLIP checkpoint file")
    p.add_argument("--cache-dir", default=None, help="frame/feature cache root")
    p.add_argument("--limit-train", type=int, default=None, help="first N training videos (quick runs)")
    p.add_argument("--limit-test", type=int, default=None, help="first N test videos (quick runs)")
    p.add_argument("--tracking-root", default="runs", help="folder of mlflow.db, artifacts and journals")
    p.add_argument("--tracking-uri", default=None, help="MLflow store or server (default sqlite under --tracking-root)")
    p.add_argument("--experiment", default="eabench")
    p.add_argument("--stale-after", type=float, default=7200.0, metavar="SECONDS",
                   help="a RUNNING trial of another host whose heartbeat is this old is presumed dead")
    p.add_argument("--trainer", default="harness.engine:run_training", metavar="MODULE:FUNCTION",
                   help="training function with run_training's signature (default: the engine)")
    p.add_argument("--config-factory", default="studies.engine_bridge:make_config", metavar="MODULE:FUNCTION",
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
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _context(args: argparse.Namespace, *, kind: str, name: str, table: str | None = None):
    from studies.context import StudyContext
    from studies.storage import resolve_storage

    options = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device,
               "weights": args.weights, "cache_dir": args.cache_dir, "limit_train": args.limit_train,
               "limit_test": args.limit_test}
    return StudyContext(
        study_name=name, kind=kind, storage=resolve_storage(args.storage, name, Path(args.tracking_root)),
        dataset=args.dataset, root=str(args.root), protocol=args.protocol, runs_root=str(args.tracking_root),
        tracking_uri=args.tracking_uri, experiment=args.experiment, sets=tuple(args.overrides), table=table,
        trainer=args.trainer, config_factory=args.config_factory, stale_after_s=args.stale_after,
        train_options=tuple((k, v) for k, v in options.items() if v is not None),
    )


def _live(args: argparse.Namespace) -> bool:
    """Whether the live display draws (a terminal, not CI, no --no-progress)."""
    from harness.console import get_console, progress_enabled

    return progress_enabled(get_console()) and not args.no_progress


def _board(args: argparse.Namespace, title: str, count_done: Any = None, show_params: bool = False):
    from harness.console import get_console
    from studies.leaderboard import LiveBoard, trials_loader

    console = get_console()
    live = _live(args)

    def factory(study: Any, total: int) -> LiveBoard:
        return LiveBoard(trials_loader(study), console=console, live=live, title=title, total=total,
                         count_done=count_done, show_params=show_params)
    return factory


def _finish(args: argparse.Namespace, ctx: Any, payload: dict[str, Any], rows: list, title: str,
            show_params: bool = False) -> None:
    from harness.console import get_console
    from harness.tracking import resolve_uri
    from studies.leaderboard import render_table
    from studies.storage import dashboard_command

    console = get_console()
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        console.print(render_table(rows, title=title, show_params=show_params))
    console.print(f"optuna-dashboard: {dashboard_command(ctx.storage)}", highlight=False)
    console.print(f"mlflow ui: mlflow ui --backend-store-uri {resolve_uri(ctx.runs_root, ctx.tracking_uri)}",
                  highlight=False)


def _select_variants(table: str | None, spec: str | None) -> list[str]:
    import fnmatch

    from harness.errors import ConfigError
    from variants import list_variants, table_variants

    if table is None and not spec:
        raise ConfigError("name a TABLE (`eabench study tables` lists them) or give --variants a,b,c")
    try:
        pool = table_variants(table) if table else list_variants("*")
    except KeyError as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    if not spec:
        return pool
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        hits = [v for v in pool if fnmatch.fnmatchcase(v, item)]
        if not hits and table is None and not any(c in item for c in "*?["):
            from variants import parse_variant_name

            try:  # a valid name outside the registry (another ratio) is still trainable
                hits = [parse_variant_name(item).name]
            except (ValueError, KeyError):
                hits = []
        if not hits:
            where = f"table {table}" if table else "the registry"
            raise ConfigError(f"--variants {item!r} matches nothing in {where}; `eabench variants` lists names")
        out += [h for h in hits if h not in out]
    return out


# ------------------------------------------------------------------------------------------ commands
def _table(args: argparse.Namespace) -> int:
    from harness.errors import ConfigError
    from studies.logs import setup_logging
    from studies.table import DEFAULT_SEEDS, run_table_study, table_cells, trial_params

    setup_logging(verbose=args.verbose)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if not 1 <= args.seeds <= len(DEFAULT_SEEDS):
        raise ConfigError(f"--seeds must be between 1 and {len(DEFAULT_SEEDS)}")
    variants = _select_variants(args.table, args.variants)
    seeds = list(DEFAULT_SEEDS[: args.seeds])
    if args.study_name:
        name = args.study_name
    elif args.table and not args.variants:
        name = f"{args.table}-{args.dataset}-{args.protocol}"
    else:
        digest = hashlib.sha1(",".join(variants).encode()).hexdigest()[:8]
        name = f"{args.table or 'variants'}-{digest}-{args.dataset}-{args.protocol}"
    ctx = _context(args, kind="table", name=_slug(name), table=args.table)
    cells = set(table_cells(variants, seeds))

    def count_done(trials: list) -> int:
        done = {(str(trial_params(t).get("variant")), int(trial_params(t).get("seed", -1)))
                for t in trials if t.state.name == "COMPLETE"}
        return len(done & cells)

    title = f"{ctx.study_name}: {len(variants)} variants x {len(seeds)} seed(s)"
    result = run_table_study(ctx, variants, seeds, workers=args.workers, board=_board(args, title, count_done),
                             worker_log_dir=_live(args))
    from studies.leaderboard import leaderboard_rows

    _finish(args, ctx, result.to_json(), leaderboard_rows(result.trials), title)
    return 0 if not result.coverage.missing else 1


def _tables(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.console import get_console
    from variants import get_variant, list_tables, table_variants

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
    get_console().print(out)
    return 0


def _search(args: argparse.Namespace) -> int:
    from harness.errors import ConfigError
    from harness.presets import get_preset, override
    from studies.logs import setup_logging
    from studies.search import SearchSettings, run_search_study
    from studies.space import default_space, load_space_file

    setup_logging(verbose=args.verbose)
    if args.workers < 1 or args.n_trials < 1:
        raise ConfigError("--workers and --n-trials must be at least 1")
    preset = override(get_preset(args.dataset), dict(args.overrides))
    space = default_space(args.variants, batch_size=args.batch_size or preset.batch_size,
                          max_frames=preset.max_frames)
    if args.space is not None:
        space = load_space_file(args.space, space)
    name = args.study_name or _slug(f"search-{args.variants}-{args.dataset}-{args.protocol}")
    ctx = _context(args, kind="search", name=_slug(name))
    settings = SearchSettings(space=space, n_trials=args.n_trials, timeout_s=args.timeout, seed=args.seed,
                              sampler_seed=args.sampler_seed, n_startup_trials=args.n_startup_trials)
    title = f"{ctx.study_name}: TPE search, {args.n_trials} trials"
    result = run_search_study(ctx, settings, workers=args.workers, board=_board(args, title, show_params=True),
                              worker_log_dir=_live(args))
    from harness.console import get_console
    from studies.leaderboard import leaderboard_rows

    _finish(args, ctx, result.to_json(), leaderboard_rows(result.trials), title, show_params=True)
    console = get_console()
    if result.best:
        console.print(f"best trial {result.best['number']}: T2V R@1 {result.best['value']:.2f} "
                      f"({result.best['variant']}, {result.best['params']})", highlight=False)
        console.print(f"retrain: {result.best['command']}", highlight=False)
    for k, v in result.importances.items():
        console.print(f"importance {k}: {v:.3f}", highlight=False)
    return 0 if result.best else 1
