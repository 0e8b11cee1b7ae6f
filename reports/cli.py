"""``eabench report tables|weights|all|list|compare`` and ``eabench reproduce``: thin wrappers over
:mod:`reports.build`, :mod:`reports.compare` and :mod:`reports.reproduce`.

What a command produced (the files it wrote, the studies it lists, ``--json``) goes to stdout;
progress and messages go to stderr.

The library modules are imported inside the commands: they pull in matplotlib, pandas and the
studies (seconds), which every other ``eabench`` command would otherwise pay for at start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from harness.console import get_console, output_console
from harness.errors import ConfigError
from harness.presets import PRESETS, parse_assignment
from harness.tracking import DEFAULT_EXPERIMENT, resolve_uri
from harness.train import Protocol

__all__ = ["register"]


def _common(p: argparse.ArgumentParser, *, needs_target: bool = True) -> None:
    p.add_argument(
        "--root",
        type=Path,
        default=Path("runs"),
        help="tracking folder (default: runs, i.e. sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides --root)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)")
    if needs_target:
        p.add_argument(
            "--study", action="append", default=[], metavar="NAME", help="study name (repeat for several)"
        )
        p.add_argument(
            "--run", action="append", default=[], metavar="RUN_ID", help="a single run (repeatable)"
        )
        p.add_argument(
            "--out", type=Path, default=None, help="output folder (default: <root>/report/<study or run>)"
        )
        p.add_argument("--no-log", action="store_true", help="do not copy figures/tables into MLflow")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report", help="paper-style tables and frame-weight figures from MLflow runs",
        description="Tables and figures from tracked runs. What a command wrote goes to stdout (--json: a JSON "
        "summary); progress and messages go to stderr.",
    )
    sub = report.add_subparsers(dest="report_command", metavar="WHAT")

    p = sub.add_parser("tables", help="result tables (Markdown, LaTeX, HTML, CSV)")
    _common(p)
    p.add_argument("--format", default="md,tex,html,csv", help="comma list of md, tex, html, csv")
    p.add_argument("--table", default=None, help="paper table whose row labels to use (default: the study's)")
    p.set_defaults(func=_tables)

    p = sub.add_parser("weights", help="frame-weight figures, heatmaps, entropy, curves")
    _common(p)
    p.add_argument("--videos", type=int, default=4, help="per-video figures to draw (default 4)")
    p.set_defaults(func=_weights)

    p = sub.add_parser("all", help="tables + figures + index.html")
    _common(p)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--format", default="md,tex,html,csv")
    p.set_defaults(func=_all)

    p = sub.add_parser("list", help="studies recorded in the store")
    _common(p, needs_target=False)
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "compare", help="paired comparison of two runs (or STUDY:VARIANT rows) on the same test set",
        description="b against a, query by query: R@1/5/10 in both directions with the difference b - a, its "
        "95 % bootstrap interval and an exact McNemar p-value (several seeds per side: a paired permutation "
        "test on seed-averaged per-query success). Needs the runs' ranks.npz; refuses runs scored on "
        "different test sets.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run id or STUDY:VARIANT (all finished seeds)")
    p.add_argument("run_b", metavar="RUN_B", help="run id or STUDY:VARIANT")
    _common(p, needs_target=False)
    p.set_defaults(func=_compare)

    report.set_defaults(func=lambda args: (report.print_help(sys.stderr), 2)[1])
    _register_reproduce(subparsers)


def _register_reproduce(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="the main job: data, paper-table studies and the report page",
        description="The main job: data -> paper-table studies -> report page. With no arguments it runs "
        "on the embedded synthetic benchmark (generated into data/synthetic on first use) in the frozen "
        "protocol on CPU, and ends by printing where index.html is and how to open mlflow ui. Real datasets "
        "need --root (the official layout) and CLIP weights (--weights). Everything is resumable: rerun the "
        "same command and finished studies train nothing again.",
    )
    p.add_argument("--dataset", choices=list(PRESETS), default="synthetic")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset folder (synthetic: default data/synthetic, generated if absent)")
    p.add_argument("--protocol", choices=[x.value for x in Protocol], default=None,
                   help="frozen (CLIP fixed, heads train; default for synthetic) or paper (full fine-tuning)")
    p.add_argument("--tables", nargs="+", default=None, metavar="TABLE",
                   help="paper tables to run (default: synthetic: the meanP and sequential tables and two ratio "
                   "ablations, named in the job's first lines (the tight type is opt-in, slow on CPU); real "
                   "datasets: every table of the dataset; `eabench study tables` lists them)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: <runs-root>/report/<dataset>)")
    p.add_argument("--runs-root", type=Path, default=Path("runs"),
                   help="MLflow store and Optuna storage folder (default: runs)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<runs-root>/mlflow.db)")
    p.add_argument("--weights", default=None, help="CLIP checkpoint (required for real datasets)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant: 42, 43, ... (default 1)")
    p.add_argument("--workers", type=int, default=1, help="study worker processes (default 1)")
    p.add_argument("--set", dest="sets", type=parse_assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="preset override for every run (repeatable), e.g. epochs=3")
    p.add_argument("--small", action="store_true",
                   help="a tiny dataset, 1 epoch and one small table (for tests and a first look)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_reproduce)


def _client(args: argparse.Namespace) -> tuple[Any, str]:
    from reports.runs import open_client

    uri = resolve_uri(args.root, args.tracking_uri)
    return open_client(uri), uri




def _command_line() -> str:
    """This command as the user typed it, for the report page (empty when not run from a shell),
    with credentials in URIs and in --tracking-uri / --storage values redacted."""
    from reports.page import redact_command

    return redact_command("eabench " + " ".join(sys.argv[1:])) if sys.argv[1:2] in (["report"], ["reproduce"]) else ""


def _out_dir(args: argparse.Namespace) -> Path:
    from reports.build import slug

    if args.out is not None:
        return args.out
    name = "+".join(args.study) if args.study else (args.run[0][:12] if args.run else "report")
    return Path(args.root) / "report" / slug(name)


def _target(args: argparse.Namespace) -> None:
    if not args.study and not args.run:
        raise ConfigError(
            "say what to report on: --study NAME or --run RUN_ID (`eabench report list` shows the studies)"
        )


def _formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in fmts if f not in ("md", "tex", "html", "csv")]
    if bad:
        raise ConfigError(f"--format: unknown {', '.join(bad)}; choose from md, tex, html, csv")
    return fmts


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _print_messages(messages: list[str]) -> None:
    con = get_console()
    for m in messages:
        con.print(f"[yellow]•[/] {escape(m)}", highlight=False)


def _files_table(tables: list[tuple[Any, dict[str, Path]]]) -> Table:
    """One row per written table: its dataset, protocol, numerics and files."""
    out = Table(title=f"{len(tables)} table(s)")
    for col in ("dataset", "protocol", "numerics", "files"):
        out.add_column(col, overflow="fold")
    for t, paths in tables:
        out.add_row(t.dataset, t.protocol, t.numerics or "-", "\n".join(str(p) for p in paths.values()))
    return out


def _tables(args: argparse.Namespace) -> int:
    from reports.build import log_tables, write_tables
    from reports.ranks import load_ranks_for
    from reports.runs import find_study_parent, load_runs

    _target(args)
    client, _ = _client(args)
    out = _out_dir(args)
    fmts = _formats(args.format)
    written = []
    groups = [(s, load_runs(client, study=s, experiment=args.experiment)) for s in args.study] or [
        ("", load_runs(client, run_ids=args.run, experiment=args.experiment, finished_only=False))
    ]
    for name, runs in groups:
        ranks = load_ranks_for(client, [r.run_id for r in runs])
        tables = write_tables(runs, out / "tables", formats=fmts, study=name, table=args.table, ranks=ranks)
        written += tables
        parent = find_study_parent(client, name, args.experiment) if name and not args.no_log else None
        if parent is not None:  # the study's parent run carries its table (Markdown + CSV at least)
            try:
                log_tables(client, parent.info.run_id, tables)
            except Exception as exc:  # a read-only store must not lose the local tables
                get_console().print(f"[yellow]could not log the tables to MLflow: {escape(str(exc))}[/]")
    if not written:
        get_console().print("[yellow]no finished runs: nothing to tabulate[/]")
    if args.json:
        _print_json({"tables": [{"dataset": t.dataset, "protocol": t.protocol, "numerics": t.numerics,
                                 "files": {k: str(v) for k, v in p.items()}} for t, p in written]})
    elif written:
        output_console().print(_files_table(written))
    return 0


def _build(args: argparse.Namespace, *, page: bool) -> int:
    """`report weights` (figures only) and `report all` (tables, figures and index.html)."""
    from reports.build import build_report

    _target(args)
    client, uri = _client(args)
    res = build_report(
        client,
        studies=args.study or None,
        run_ids=args.run or None,
        out=_out_dir(args),
        experiment=args.experiment,
        videos=args.videos,
        formats=_formats(args.format) if page else (),
        page=page,
        log_artifacts=not args.no_log,
        tracking_uri=uri,
        command=_command_line() if page else "",
    )
    _print_messages(res.messages)
    if args.json:
        _print_json(res.to_dict())
    else:
        _report_summary(res, tables=page)
    return 0


def _weights(args: argparse.Namespace) -> int:
    return _build(args, page=False)


def _all(args: argparse.Namespace) -> int:
    return _build(args, page=True)


def _report_summary(res: Any, tables: bool) -> None:
    """What a report wrote, on stdout."""
    out = output_console()
    if tables:
        out.print(f"[bold]{len(res.tables)}[/] table(s) in {res.out_dir / 'tables'}", highlight=False)
    out.print(f"[bold]{len(res.figures)}[/] figure(s) in {res.out_dir / 'figures'}", highlight=False)
    if res.shares is not None and not res.shares.empty:
        for _, s in res.shares.iterrows():
            out.print(
                f"  relevant-frame share {escape(str(s['label']))}: {s['share']:.3f} "
                f"(uniform {s['uniform_share']:.3f})",
                highlight=False,
            )
    if res.index is not None:
        out.print(f"[green]report page:[/] {res.index.resolve()}", highlight=False, soft_wrap=True)


def _list(args: argparse.Namespace) -> int:
    from reports.runs import list_studies

    client, _ = _client(args)
    names = list_studies(client, args.experiment)
    if args.json:
        _print_json({"studies": names})
        return 0
    if not names:
        get_console().print("no studies recorded yet")
    for n in names:  # one name a line, for `| grep` and `xargs`
        sys.stdout.write(n + "\n")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from reports.compare import compare_runs, comparison_table

    client, _ = _client(args)
    res = compare_runs(client, args.run_a, args.run_b, experiment=args.experiment)
    if args.json:
        _print_json(res)
    else:
        output_console().print(comparison_table(res))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from harness.tracking import mlflow_ui_command, runs_table_url
    from reports.reproduce import plan_reproduction, reproduce

    plan = plan_reproduction(
        args.dataset, root=args.root, protocol=args.protocol, tables=args.tables, out=args.out,
        runs_root=args.runs_root, tracking_uri=args.tracking_uri, weights=args.weights, seeds=args.seeds,
        workers=args.workers, sets=args.sets, small=args.small,
    )
    res = reproduce(plan, command=_command_line() or "eabench reproduce")
    con = get_console()
    _print_messages(res.report.messages if res.report is not None else [])
    con.rule("done")
    con.print(
        f"finished in {res.seconds['total'] / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in res.seconds.items() if k != 'total')})",
        highlight=False,
    )
    if args.json:
        _print_json(res.to_dict())
        return 0
    out = output_console()
    out.print(f"[bold green]report:[/] {res.index.resolve() if res.index else '(none)'}", highlight=False,
              soft_wrap=True)
    out.print(f"[bold]browse the runs:[/] {escape(mlflow_ui_command(res.tracking_uri))}", highlight=False,
              soft_wrap=True)
    if res.experiment_id:
        out.print(f"[bold]runs table:[/] {runs_table_url(res.experiment_id)}", highlight=False, soft_wrap=True)
    return 0
