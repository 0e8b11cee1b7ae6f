"""``eabench report tables|weights|all|list``: tables and figures from tracked runs.

Progress and messages go to stderr (Rich); ``--json`` prints the machine-readable summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

__all__ = ["register"]


def _common(p: argparse.ArgumentParser, *, needs_target: bool = True) -> None:
    p.add_argument(
        "--root",
        type=Path,
        default=Path("runs"),
        help="tracking folder (default: runs, i.e. sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides --root)")
    p.add_argument("--experiment", default="eabench", help="MLflow experiment (default: eabench)")
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
        "report", help="paper-style tables and frame-weight figures from MLflow runs", description=__doc__
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

    report.set_defaults(func=lambda args: (report.print_help(sys.stderr), 2)[1])


def _client(args: argparse.Namespace) -> tuple[Any, str]:
    from reports.runs import default_tracking_uri, open_client

    uri = (
        args.tracking_uri
        or os.environ.get("EABENCH_TRACKING_URI")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(args.root)
    )
    return open_client(uri), uri


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


def _emit(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def _print_messages(messages: list[str]) -> None:
    from rich.markup import escape

    from harness.console import get_console

    con = get_console()
    for m in messages:
        con.print(f"[yellow]•[/] {escape(m)}", highlight=False)


def _tables(args: argparse.Namespace) -> int:
    from harness.console import get_console
    from reports.build import write_tables
    from reports.runs import load_runs

    _target(args)
    client, _ = _client(args)
    out = _out_dir(args)
    fmts = _formats(args.format)
    written = []
    groups = [(s, load_runs(client, study=s, experiment=args.experiment)) for s in args.study] or [
        ("", load_runs(client, run_ids=args.run, experiment=args.experiment, finished_only=False))
    ]
    for name, runs in groups:
        written += write_tables(runs, out / "tables", formats=fmts, study=name, table=args.table)
    con = get_console()
    for t, paths in written:
        con.print(
            f"[bold]{t.dataset}[/] / {t.protocol}: " + ", ".join(str(p) for p in paths.values()),
            highlight=False,
        )
    if not written:
        con.print("[yellow]no finished runs: nothing to tabulate[/]")
    _emit(
        args,
        {
            "tables": [
                {"dataset": t.dataset, "protocol": t.protocol, "files": {k: str(v) for k, v in p.items()}}
                for t, p in written
            ]
        },
    )
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
        command="eabench " + " ".join(sys.argv[1:]) if page and sys.argv[1:2] == ["report"] else "",
    )
    _report_summary(res, tables=page)
    _emit(args, res.to_dict())
    return 0


def _weights(args: argparse.Namespace) -> int:
    return _build(args, page=False)


def _all(args: argparse.Namespace) -> int:
    return _build(args, page=True)


def _report_summary(res: Any, tables: bool) -> None:
    from rich.markup import escape

    from harness.console import get_console

    con = get_console()
    _print_messages(res.messages)
    if tables:
        con.print(f"[bold]{len(res.tables)}[/] table(s) in {res.out_dir / 'tables'}", highlight=False)
    con.print(f"[bold]{len(res.figures)}[/] figure(s) in {res.out_dir / 'figures'}", highlight=False)
    if res.shares is not None and not res.shares.empty:
        for _, s in res.shares.iterrows():
            con.print(
                f"  relevant-frame share {escape(str(s['label']))}: {s['share']:.3f} "
                f"(uniform {s['uniform_share']:.3f})",
                highlight=False,
            )
    if res.index is not None:
        con.print(f"[green]report page:[/] {res.index.resolve()}", highlight=False)


def _list(args: argparse.Namespace) -> int:
    from harness.console import get_console
    from reports.runs import list_studies

    client, _ = _client(args)
    names = list_studies(client, args.experiment)
    con = get_console()
    for n in names:
        con.print(n, highlight=False)
    if not names:
        con.print("no studies recorded yet")
    _emit(args, {"studies": names})
    return 0
