"""The main job (``eabench reproduce``): data -> paper-table studies -> report page.

By default it runs on the embedded synthetic benchmark (generated into ``data/synthetic`` on first
use, with the pre-trained tiny CLIP), in the frozen protocol, on CPU. Real datasets need a root in
the official layout and CLIP weights. A notebook does the same with::

    res = reproduce(plan_reproduction("synthetic", small=True))
    res.index  # the report page

Everything is resumable: the synthetic data is kept, the frame cache is reused, and a study that
already finished its cells re-runs nothing (Optuna storage under ``runs/``). Progress goes to
stderr; what the job produced is in the returned :class:`ReproduceResult`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.console import get_console, progress_enabled
from harness.data.dataset_cache import cache_dataset
from harness.errors import ConfigError, DataError
from harness.presets import get_preset
from harness.synthetic import TRUTH_FILE, SyntheticConfig, generate_synthetic
from harness.tracking import configure, redact_uri
from harness.train import Protocol
from reports.build import ReportOutput, build_report
from reports.runs import open_client
from studies.launch import StudyOptions, table_study
from studies.leaderboard import leaderboard_rows, render_table
from studies.logs import setup_logging
from variants import get_variant, list_tables, table_variants

__all__ = [
    "OPTIONAL_SYNTHETIC_TABLES",
    "SMALL_SYNTHETIC",
    "SYNTHETIC_TABLES",
    "ReproducePlan",
    "ReproduceResult",
    "build_cache",
    "plan_reproduction",
    "prepare_synthetic",
    "reproduce",
    "run_table",
]

# Default synthetic job: the paper's parameter-free and sequential tables and two ratio
# ablations, sized (with the data generation) for 10 minutes on 2 CPU cores. The tight type scores
# every (text, video) pair of each training batch through the cross encoder and costs many
# minutes per run on CPU, so it is opt-in: `--tables ... tightTransf`.
SYNTHETIC_TABLES = ("meanP", "seqLSTM", "seqTransf", "ratio-meanP-EA", "ratio-seqTransf-A")
OPTIONAL_SYNTHETIC_TABLES = ("tightTransf",)
SMALL_TABLES = ("meanP",)
# small trains four rows of the meanP table: one with neither block, excitation only,
# aggregation only and both, so every kind of frame-weight figure appears.
SMALL_VARIANTS = ("meanP", "meanP_E4", "meanP_A4", "meanP_E4_A4")
# small: one quick epoch on small batches, unless the caller sets these preset fields itself.
SMALL_SETS = (("epochs", "1"), ("batch_size", "16"), ("batch_size_val", "16"))
# Tables that real-dataset defaults leave out: ours / not clearly in the paper (name them to run them).
_NOT_BY_DEFAULT = ("masked", "excitation-seq-aggregation")


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

    def study_name(self, table: str) -> str:
        tail = "-small" if self.small else ""
        return f"{self.study_prefix}{table}-{self.dataset}-{self.protocol}{tail}"


# ------------------------------------------------------------------ planning
def _default_tables(dataset: str, small: bool) -> tuple[str, ...]:
    if dataset == "synthetic":
        return SMALL_TABLES if small else SYNTHETIC_TABLES
    out = []
    for t in list_tables():
        if t in _NOT_BY_DEFAULT:
            continue
        rows = [r for n in table_variants(t) for r in get_variant(n).rows if r.table == t]
        if any(dataset in r.dataset_scope for r in rows):
            out.append(t)
    return tuple(out)


def plan_reproduction(
    dataset: str = "synthetic",
    *,
    root: Path | str | None = None,
    protocol: str | None = None,
    tables: Sequence[str] | None = None,
    out: Path | str | None = None,
    runs_root: Path | str = "runs",
    tracking_uri: str | None = None,
    weights: str | None = None,
    seeds: int = 1,
    workers: int = 1,
    sets: Sequence[tuple[str, str]] = (),
    small: bool = False,
) -> ReproducePlan:
    """Check a request and fill in its defaults: the synthetic root and tables, the protocol
    (frozen for synthetic, paper otherwise), the report folder. ``sets`` are preset overrides
    (``(key, value)`` strings) for every run; ``small`` is a tiny dataset, one epoch, one table."""
    preset = get_preset(dataset)  # ConfigError naming the datasets
    protocol = protocol or (Protocol.FROZEN.value if dataset == "synthetic" else Protocol.PAPER.value)
    if protocol not in {p.value for p in Protocol}:
        raise ConfigError(f"protocol {protocol!r}: choose {' or '.join(p.value for p in Protocol)}")
    if dataset == "synthetic":
        root = Path(root) if root is not None else Path("data") / ("synthetic-small" if small else "synthetic")
    else:
        if root is None:
            raise ConfigError(
                f"--dataset {dataset} needs --root DIR: the dataset in its official layout "
                f"(see docs; `eabench data check {dataset} --root DIR` verifies it)"
            )
        if not Path(root).is_dir():
            raise DataError(f"--root {root}: no such folder")
        found = weights or preset.weights
        if not found:
            raise ConfigError(
                f"--dataset {dataset} needs CLIP weights: pass --weights PATH to the ViT-B/32 "
                f"checkpoint (OpenAI ViT-B-32.pt or an open_clip/safetensors file); "
                f"nothing is downloaded"
            )
        if not Path(found).is_file():
            raise ConfigError(f"--weights {found}: file not found")
    chosen = tuple(tables) if tables else _default_tables(dataset, small)
    bad = [t for t in chosen if t not in list_tables()]
    if bad:
        raise ConfigError(f"--tables: unknown {', '.join(bad)}; tables: {', '.join(list_tables())}")
    sets = [tuple(kv) for kv in sets]
    if small:
        have = {k for k, _ in sets}
        sets += [kv for kv in SMALL_SETS if kv[0] not in have]
    runs_root = Path(runs_root)
    return ReproducePlan(
        dataset=dataset,
        root=Path(root),
        protocol=protocol,
        tables=chosen,
        out=Path(out) if out is not None else runs_root / "report" / (dataset + ("-small" if small else "")),
        runs_root=runs_root,
        tracking_uri=tracking_uri,
        seeds=int(seeds),
        small=small,
        workers=max(1, int(workers)),
        weights=weights,
        sets=tuple(sets),
        variants=SMALL_VARIANTS if small and dataset == "synthetic" and not tables else (),
    )


# ------------------------------------------------------------------ steps
def prepare_synthetic(root: Path, small: bool) -> bool:
    """Generate the benchmark (with the pre-trained tiny CLIP) unless it is there; True if generated."""
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
        cfg = SyntheticConfig()  # the benchmark as documented (harness.synthetic)
    generate_synthetic(root, cfg, progress=progress_enabled())
    return True


def build_cache(plan: ReproducePlan) -> None:
    """Decode every video once into the frame cache (the engine would, but once per process)."""
    cache_dataset(plan.dataset, plan.root, workers=max(1, min(4, os.cpu_count() or 1)),
                  progress=progress_enabled())


def run_table(plan: ReproducePlan, table: str) -> str:
    """Run one paper-table study (resumable grid over the table's variants, one MLflow parent run,
    one child run per trial); its name. Raises ConfigError when cells stay without a finished run."""
    options = StudyOptions(
        dataset=plan.dataset, root=str(plan.root), protocol=plan.protocol, workers=plan.workers,
        study_name=plan.study_name(table), sets=plan.sets,
        train_options=(("weights", plan.weights),) if plan.weights else (),
        runs_root=str(plan.runs_root), tracking_uri=plan.tracking_uri, progress=progress_enabled(),
    )
    result = table_study(options, table, variants=plan.variants or None, seeds=plan.seeds)
    # The leaderboard is part of this job's progress, so stderr (stdout is the job's result).
    get_console().print(render_table(leaderboard_rows(result.trials), title=result.title))
    if result.coverage.missing:
        raise ConfigError(
            f"study {result.study_name} did not finish: {len(result.coverage.missing)} cell(s) without a "
            f"finished run (see the coverage lines above; run the same job again to resume)"
        )
    return result.study_name


# ------------------------------------------------------------------ the job
@dataclass
class ReproduceResult:
    plan: ReproducePlan
    studies: list[str]
    index: Path | None
    tracking_uri: str
    seconds: dict[str, float]
    report: ReportOutput | None = None
    experiment_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.plan.dataset,
            "protocol": self.plan.protocol,
            "tables": list(self.plan.tables),
            "studies": self.studies,
            "index": str(self.index) if self.index else None,
            "tracking_uri": redact_uri(self.tracking_uri),
            "experiment_id": self.experiment_id,
            "seconds": self.seconds,
            "report": self.report.to_dict() if self.report is not None else None,
        }


def reproduce(plan: ReproducePlan, *, command: str = "eabench reproduce") -> ReproduceResult:
    """Run the job: data (synthetic: generated), frame cache, one study per table, the report.

    ``command`` is shown on the report page as the command that made it.
    """
    con = get_console()
    # Route library logs through the Rich console before anything logs: otherwise the first
    # module-level logging.info (open_clip's, while the tiny CLIP is pre-trained) installs
    # Python's plain stderr handler and every later line prints twice.
    setup_logging()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    target = configure(plan.runs_root, plan.tracking_uri)
    con.rule(f"[bold]EA-Bench reproduce[/]: {plan.dataset}, {plan.protocol} protocol")
    if plan.dataset == "synthetic" and plan.protocol == Protocol.FROZEN:
        con.print(
            "protocol: [bold]frozen[/] (default for synthetic: CLIP fixed, only the heads train; "
            "pass --protocol paper for full fine-tuning)",
            highlight=False,
        )
    con.print(f"tables: {', '.join(plan.tables)}; {plan.seeds} seed(s) per variant", highlight=False)
    if plan.dataset == "synthetic" and not set(OPTIONAL_SYNTHETIC_TABLES) & set(plan.tables) and not plan.small:
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
    rep = build_report(
        open_client(target.uri),
        studies=studies,
        out=plan.out,
        experiment=target.experiment,
        title=f"EA-Bench: {plan.dataset} ({plan.protocol} protocol)",
        command=command,
        tracking_uri=target.uri,
    )
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ReproduceResult(plan, studies, rep.index, target.uri, timings, rep, target.experiment_id)
