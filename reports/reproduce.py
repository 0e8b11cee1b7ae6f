"""``eabench reproduce``: the main job. Data -> paper-table studies -> report page.

With no arguments it runs on the embedded synthetic benchmark (generated into
``data/synthetic`` on first use, with the pre-trained tiny CLIP), in the frozen protocol, on
CPU, and ends by printing where ``index.html`` is and how to open ``mlflow ui``.
Real datasets need ``--root`` (the official layout) and CLIP weights (``--weights``).

Everything is resumable: the synthetic data is kept, the frame cache is reused, and a study
that already finished its cells re-runs nothing (Optuna storage under ``runs/``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError

__all__ = ["SMALL_SYNTHETIC", "SYNTHETIC_TABLES", "ReproducePlan", "plan_for", "register", "reproduce"]

DATASETS = ("synthetic", "msrvtt", "activitynet", "didemo")
# Default synthetic job: the paper's parameter-free and sequential tables and two ratio
# ablations, sized (with the data generation) for 10 minutes on 2 CPU cores. The tight type scores
# every (text, video) pair of each training batch through the cross encoder and costs many
# minutes per run on CPU, so it is opt-in: `--tables ... tightTransf`.
SYNTHETIC_TABLES = ("meanP", "seqLSTM", "seqTransf", "ratio-meanP-EA", "ratio-seqTransf-A")
OPTIONAL_SYNTHETIC_TABLES = ("tightTransf",)
SMALL_TABLES = ("meanP",)
# --small trains four rows of the meanP table: one with neither block, excitation only,
# aggregation only and both, so every kind of frame-weight figure appears.
SMALL_VARIANTS = ("meanP", "meanP_E4", "meanP_A4", "meanP_E4_A4")


@dataclass(frozen=True)
class SyntheticSize:
    num_train: int
    num_test: int
    pretrain_steps: int


SMALL_SYNTHETIC = SyntheticSize(num_train=48, num_test=16, pretrain_steps=30)


@dataclass(frozen=True)
class ReproducePlan:
    dataset: str
    root: Path
    protocol: str
    tables: tuple[str, ...]
    out: Path
    runs_root: Path
    tracking_uri: str | None
    seeds: int
    small: bool
    workers: int
    weights: str | None = None
    sets: tuple[tuple[str, str], ...] = ()
    variants: tuple[str, ...] = ()
    study_prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def study_name(self, table: str) -> str:
        tail = "-small" if self.small else ""
        return f"{self.study_prefix}{table}-{self.dataset}-{self.protocol}{tail}"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="the main job: data, paper-table studies and the report page",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default="synthetic")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="dataset folder (synthetic: default data/synthetic, generated if absent)",
    )
    p.add_argument(
        "--protocol",
        choices=("frozen", "paper"),
        default=None,
        help="frozen (CLIP fixed, heads train; default for synthetic) or paper (full fine-tuning)",
    )
    p.add_argument(
        "--tables",
        nargs="+",
        default=None,
        metavar="TABLE",
        help="paper tables to run (default: synthetic "
        f"{' '.join(SYNTHETIC_TABLES)} (add {' '.join(OPTIONAL_SYNTHETIC_TABLES)} for the tight "
        "type, slow on CPU); real datasets: every table of the dataset; "
        "`eabench study tables` lists them)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <runs-root>/report/<dataset>)"
    )
    p.add_argument(
        "--runs-root",
        type=Path,
        default=Path("runs"),
        help="MLflow store and Optuna storage folder (default: runs)",
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<runs-root>/mlflow.db)"
    )
    p.add_argument("--weights", default=None, help="CLIP checkpoint (required for real datasets)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant: 42, 43, ... (default 1)")
    p.add_argument("--workers", type=int, default=1, help="study worker processes (default 1)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="sets",
        help="preset override for every run (e.g. epochs=3)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="a tiny dataset, 1 epoch and one small table (for tests and a first look)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_main)


# ------------------------------------------------------------------ planning
def _default_tables(dataset: str, small: bool) -> tuple[str, ...]:
    if dataset == "synthetic":
        return SMALL_TABLES if small else SYNTHETIC_TABLES
    from variants import list_tables, table_variants
    from variants.registry import get_variant

    out = []
    for t in list_tables():
        if t in ("masked", "excitation-seq-aggregation"):
            continue  # ours / not clearly in the paper: run them explicitly with --tables
        names = table_variants(t)
        rows = [r for n in names for r in get_variant(n).rows if r.table == t]
        if any(dataset in r.dataset_scope for r in rows):
            out.append(t)
    return tuple(out)


def plan_for(args: argparse.Namespace) -> ReproducePlan:
    dataset = args.dataset
    protocol = args.protocol or ("frozen" if dataset == "synthetic" else "paper")
    if dataset == "synthetic":
        root = args.root or Path("data") / ("synthetic-small" if args.small else "synthetic")
    else:
        if args.root is None:
            raise ConfigError(
                f"--dataset {dataset} needs --root DIR: the dataset in its official layout "
                f"(see docs; `eabench data check {dataset} --root DIR` verifies it)"
            )
        if not Path(args.root).is_dir():
            raise DataError(f"--root {args.root}: no such folder")
        weights = args.weights
        if not weights:
            from harness.presets import get_preset

            weights = get_preset(dataset).weights
        if not weights:
            raise ConfigError(
                f"--dataset {dataset} needs CLIP weights: pass --weights PATH to the ViT-B/32 "
                f"checkpoint (OpenAI ViT-B-32.pt or an open_clip/safetensors file); "
                f"nothing is downloaded"
            )
        if not Path(weights).is_file():
            raise ConfigError(f"--weights {weights}: file not found")
    tables = tuple(args.tables) if args.tables else _default_tables(dataset, args.small)
    try:
        from variants import list_tables

        known = list_tables()
        bad = [t for t in tables if t not in known]
        if bad:
            raise ConfigError(f"--tables: unknown {', '.join(bad)}; tables: {', '.join(known)}")
    except ImportError:
        pass
    sets = []
    for kv in args.sets:
        if "=" not in kv:
            raise ConfigError(f"--set {kv}: write KEY=VALUE (e.g. epochs=3)")
        k, v = kv.split("=", 1)
        sets.append((k.strip(), v.strip()))
    if args.small:
        have = {k for k, _ in sets}
        sets += [
            kv
            for kv in (("epochs", "1"), ("batch_size", "16"), ("batch_size_val", "16"))
            if kv[0] not in have
        ]
    runs_root = Path(args.runs_root)
    return ReproducePlan(
        dataset=dataset,
        root=Path(root if dataset == "synthetic" else args.root),
        protocol=protocol,
        tables=tables,
        out=args.out or runs_root / "report" / (dataset + ("-small" if args.small else "")),
        runs_root=runs_root,
        tracking_uri=args.tracking_uri,
        seeds=int(args.seeds),
        small=args.small,
        workers=max(1, int(args.workers)),
        weights=args.weights,
        sets=tuple(sets),
        variants=SMALL_VARIANTS if args.small and dataset == "synthetic" and not args.tables else (),
    )


# ------------------------------------------------------------------ steps
def prepare_synthetic(root: Path, small: bool) -> bool:
    """Generate the benchmark (with the pre-trained tiny CLIP) unless it is there; True if generated."""
    from harness.data.synthetic import TRUTH_FILE, SyntheticConfig, generate_synthetic

    complete = (
        (root / TRUTH_FILE).is_file()
        and (root / "MSRVTT_data.json").is_file()
        and any((root / "clip").glob("*.safetensors"))
    )
    if complete:
        return False
    if small:
        s = SMALL_SYNTHETIC
        cfg = SyntheticConfig(num_train=s.num_train, num_test=s.num_test, pretrain_steps=s.pretrain_steps)
    else:
        cfg = SyntheticConfig()  # the benchmark as documented (harness.data.synthetic)
    generate_synthetic(root, cfg, progress=_progress_on())
    return True


def build_cache(plan: ReproducePlan) -> None:
    """Decode every video once into the frame cache (the engine would, but once per process)."""
    from harness.cli import main as cli_main

    argv = [
        "data",
        "cache",
        plan.dataset,
        "--root",
        str(plan.root),
        "--workers",
        str(max(1, min(4, os.cpu_count() or 1))),
    ]
    if not _progress_on():
        argv.append("--no-progress")
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)
    if rc:
        raise DataError(f"building the frame cache failed (`eabench {' '.join(argv)}` returned {rc})")


def run_table(plan: ReproducePlan, table: str) -> str:
    """Run one paper-table study through ``eabench study table`` (in this process); its name.

    Going through the command keeps this job on the studies' public contract: resumable grid
    over the table's variants, one MLflow parent run, one child run per trial.
    """
    from harness.cli import main as cli_main

    name = plan.study_name(table)
    argv = [
        "study",
        "table",
        table,
        "--dataset",
        plan.dataset,
        "--root",
        str(plan.root),
        "--protocol",
        plan.protocol,
        "--study-name",
        name,
        "--seeds",
        str(plan.seeds),
        "--tracking-root",
        str(plan.runs_root),
        "--workers",
        str(plan.workers),
    ]
    if plan.tracking_uri:
        argv += ["--tracking-uri", plan.tracking_uri]
    if plan.weights:
        argv += ["--weights", plan.weights]
    if plan.variants:
        argv += ["--variants", ",".join(plan.variants)]
    if not _progress_on():
        argv.append("--no-progress")
    for k, v in plan.sets:
        argv += ["--set", f"{k}={v}"]
    # The study prints its leaderboard on stderr; stdout stays free for our own --json.
    with contextlib.redirect_stdout(sys.stderr):
        rc = cli_main(argv)
    if rc:
        raise ConfigError(
            f"study {name} did not finish: `eabench {' '.join(argv)}` returned {rc} "
            f"(see the coverage lines above; rerun the same command to resume)"
        )
    return name


def _subcommand_parser(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser | None:
    cur = parser
    for word in path:
        sub = next((a for a in cur._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            return None
        cur = sub.choices[word]
    return cur


def _setup_logging() -> None:
    """Route library logs through the Rich console before anything logs.

    Otherwise the first module-level ``logging.info`` (open_clip's, while the tiny CLIP is
    pre-trained) installs Python's plain stderr handler and every later line prints twice.
    """
    try:
        from studies.logs import setup_logging
    except ImportError:
        import logging

        from rich.logging import RichHandler

        from harness.console import get_console

        logging.basicConfig(
            level="INFO",
            format="%(message)s",
            datefmt="[%X]",
            handlers=[RichHandler(console=get_console(), show_path=False)],
        )
        return
    setup_logging()


def _progress_on() -> bool:
    from harness.console import progress_enabled

    return progress_enabled()


# ------------------------------------------------------------------ the job
@dataclass
class ReproduceResult:
    plan: ReproducePlan
    studies: list[str]
    index: Path | None
    tracking_uri: str
    seconds: dict[str, float]
    report: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.plan.dataset,
            "protocol": self.plan.protocol,
            "tables": list(self.plan.tables),
            "studies": self.studies,
            "index": str(self.index) if self.index else None,
            "tracking_uri": self.tracking_uri,
            "seconds": self.seconds,
            "report": self.report.to_dict() if self.report is not None else None,
        }


def reproduce(plan: ReproducePlan) -> ReproduceResult:
    from harness.console import get_console
    from harness.tracking import configure
    from reports.build import build_report
    from reports.runs import open_client

    con = get_console()
    _setup_logging()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    target = configure(plan.runs_root, plan.tracking_uri)
    con.rule(f"[bold]EA-Bench reproduce[/]: {plan.dataset}, {plan.protocol} protocol")
    if plan.dataset == "synthetic" and plan.protocol == "frozen":
        con.print(
            "protocol: [bold]frozen[/] (default for synthetic: CLIP fixed, only the heads train; "
            "pass --protocol paper for full fine-tuning)",
            highlight=False,
        )
    con.print(f"tables: {', '.join(plan.tables)}; {plan.seeds} seed(s) per variant", highlight=False)
    if (
        plan.dataset == "synthetic"
        and not set(OPTIONAL_SYNTHETIC_TABLES) & set(plan.tables)
        and not plan.small
    ):
        con.print(
            f"[dim]not run by default (slow on CPU): {', '.join(OPTIONAL_SYNTHETIC_TABLES)}; add it with "
            f"--tables {' '.join(plan.tables + OPTIONAL_SYNTHETIC_TABLES)}[/]",
            highlight=False,
        )

    if plan.dataset == "synthetic":
        t = time.perf_counter()
        if prepare_synthetic(plan.root, plan.small):
            con.print(
                f"generated the synthetic benchmark in {plan.root} ({time.perf_counter() - t:.0f} s)",
                highlight=False,
            )
        else:
            con.print(f"using the synthetic benchmark in {plan.root}", highlight=False)
        timings["data"] = time.perf_counter() - t
        # The synthetic preset loads CLIP from <root>/clip unless --weights says otherwise.
    t = time.perf_counter()
    build_cache(plan)
    timings["frame_cache"] = time.perf_counter() - t

    studies = []
    for i, table in enumerate(plan.tables, 1):
        t = time.perf_counter()
        con.rule(f"study {i}/{len(plan.tables)}: table {table}")
        studies.append(run_table(plan, table))
        timings[f"study:{table}"] = time.perf_counter() - t

    t = time.perf_counter()
    con.rule("report")
    client = open_client(target.uri)
    cmd = "eabench " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else "eabench reproduce"
    rep = build_report(
        client,
        studies=studies,
        out=plan.out,
        experiment=target.experiment,
        title=f"EA-Bench: {plan.dataset} ({plan.protocol} protocol)",
        command=cmd,
        tracking_uri=target.uri,
    )
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ReproduceResult(plan, studies, rep.index, target.uri, timings, rep)


def _main(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from harness.console import get_console
    from reports.page import mlflow_ui_command

    plan = plan_for(args)
    res = reproduce(plan)
    con = get_console()
    for m in res.report.messages:
        con.print(f"[yellow]•[/] {escape(m)}", highlight=False)
    con.rule("done")
    con.print(
        f"finished in {res.seconds['total'] / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in res.seconds.items() if k != 'total')})",
        highlight=False,
    )
    con.print(f"[bold green]report:[/] {res.index.resolve() if res.index else '(none)'}", highlight=False)
    con.print(f"[bold]browse the runs:[/] {mlflow_ui_command(res.tracking_uri)}", highlight=False)
    if args.json:
        sys.stdout.write(json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return 0
