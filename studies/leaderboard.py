"""The leaderboard of a study, read from its Optuna storage (so it shows every worker's trials).

One row per trial: number, variant, seed, state, T2V/V2T metrics, MLflow run id, duration, and
the steps the engine skipped for a non-finite loss or gradient (a column only when a trial has any).
Rendered three ways from the same rows: a Rich table (live on a terminal), plain log lines, and
JSON for ``--json``. Completed trials sort first by T2V R@1; running ones show their last epoch.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.train.schema import nested_metrics

__all__ = [
    "LeaderboardRow",
    "LiveBoard",
    "leaderboard_rows",
    "render_table",
    "rows_to_json",
    "trial_state",
    "trials_loader",
]


@dataclass(frozen=True)
class LeaderboardRow:
    number: int
    variant: str | None
    seed: int | None
    state: str
    t2v: dict[str, float] = field(default_factory=dict)
    v2t: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    duration_s: float | None = None
    epoch: int | None = None           # last evaluated epoch (running trials)
    best_epoch: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    skipped_steps: int = 0             # non-finite steps the engine skipped (train/skipped_steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_state(t: FrozenTrial) -> str:
    """Optuna's state name, except cell duplicates skipped without training: ``DUPLICATE``."""
    if t.state == TrialState.PRUNED and "duplicate_of" in t.user_attrs:
        return "DUPLICATE"
    return t.state.name


def _duration(t: FrozenTrial, now: float) -> float | None:
    if t.datetime_start is None:
        return None
    end = t.datetime_complete.timestamp() if t.datetime_complete is not None else now
    return max(0.0, end - t.datetime_start.timestamp())


def _row(t: FrozenTrial, now: float) -> LeaderboardRow:
    ua = t.user_attrs
    t2v = dict(ua.get("t2v") or {})
    v2t = dict(ua.get("v2t") or {})
    if not t2v and isinstance(ua.get("last_metrics"), dict):
        last = ua["last_metrics"]  # a running trial: its last epoch's "t2v/R1", ...
        t2v, v2t = nested_metrics(last, "t2v"), nested_metrics(last, "v2t")
    note = ""
    if "duplicate_of" in ua:
        note = f"duplicate of #{ua['duplicate_of']}"
    elif "retry_of" in ua:
        note = f"retry of #{ua['retry_of']}"
    elif "swept_by" in ua:
        note = "worker died"
    elif "error" in ua:
        note = str(ua["error"])[:80]
    seed = t.params.get("seed", ua.get("seed"))
    return LeaderboardRow(
        number=t.number,
        variant=ua.get("variant", t.params.get("variant")),
        seed=int(seed) if seed is not None else None,
        state=trial_state(t),
        t2v=t2v,
        v2t=v2t,
        mlflow_run_id=ua.get("mlflow_run_id"),
        duration_s=_duration(t, now),
        epoch=ua.get("last_epoch"),
        best_epoch=ua.get("best_epoch"),
        params={k: v for k, v in t.params.items() if k not in ("variant", "seed")},
        note=note,
        skipped_steps=int(ua.get("skipped_steps") or 0),
    )


def _sort_key(r: LeaderboardRow) -> tuple:
    order = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "PRUNED": 3, "FAIL": 4, "DUPLICATE": 5}
    r1 = r.t2v.get("R1")
    return (order.get(r.state, 9), -(r1 if isinstance(r1, (int, float)) and not math.isnan(r1) else -1e9), r.number)


def leaderboard_rows(trials: Sequence[FrozenTrial], *, sort: bool = True) -> list[LeaderboardRow]:
    now = time.time()
    rows = [_row(t, now) for t in trials]
    return sorted(rows, key=_sort_key) if sort else rows


def rows_to_json(rows: Sequence[LeaderboardRow]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in rows]


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


_STATE_STYLE = {"COMPLETE": "green", "RUNNING": "yellow", "WAITING": "dim", "PRUNED": "magenta",
                "FAIL": "red", "DUPLICATE": "dim"}


def render_table(rows: Sequence[LeaderboardRow], *, title: str = "", top: int | None = None,
                 show_params: bool = False) -> Table:
    """A Rich table of the rows (``top`` keeps the first n after sorting)."""
    table = Table(title=title or None, show_lines=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("variant", no_wrap=True, min_width=16)  # the one column a reader must see whole
    table.add_column("seed", justify="right")
    table.add_column("state", no_wrap=True, min_width=8)
    table.add_column("T2V R@1", justify="right")
    table.add_column("V2T R@1", justify="right")
    table.add_column("epoch", justify="right")
    table.add_column("duration", justify="right")
    shown = list(rows)[:top] if top else list(rows)
    skipped = any(r.skipped_steps for r in shown)
    if skipped:  # a run that trained on fewer steps than it claims must not look like the others
        table.add_column("skipped", justify="right")
    if show_params:
        table.add_column("params")
    table.add_column("note", overflow="fold")
    for r in shown:
        style = _STATE_STYLE.get(r.state, "")
        epoch = r.best_epoch if r.state == "COMPLETE" else r.epoch
        cells = [str(r.number), r.variant or "-", _fmt(r.seed), f"[{style}]{r.state}[/]" if style else r.state,
                 _fmt(r.t2v.get("R1")), _fmt(r.v2t.get("R1")), _fmt(epoch), _fmt_duration(r.duration_s)]
        if skipped:
            cells.append(f"[yellow]{r.skipped_steps}[/]" if r.skipped_steps else "")
        if show_params:
            cells.append(", ".join(f"{k}={_fmt(v, 4)}" for k, v in r.params.items()))
        cells.append(r.note)
        table.add_row(*cells)
    if top and len(rows) > top:
        table.caption = f"{len(rows) - top} more trials not shown"
    return table


def plain_line(r: LeaderboardRow) -> str:
    """The log line of one finished (or updated) trial for non-terminal output."""
    parts = [f"trial {r.number}", r.variant or "?", f"seed {r.seed}" if r.seed is not None else "", r.state]
    if r.t2v.get("R1") is not None:
        parts.append(f"T2V R@1={_fmt(r.t2v.get('R1'))} V2T R@1={_fmt(r.v2t.get('R1'))}")
    if r.duration_s is not None:
        parts.append(f"({_fmt_duration(r.duration_s)})")
    if r.skipped_steps:
        parts.append(f"{r.skipped_steps} non-finite steps skipped")
    if r.note:
        parts.append(f"[{r.note}]")
    return " ".join(p for p in parts if p)


class LiveBoard:
    """Leaderboard above a progress bar, refreshed from the storage by a background thread.

    On a terminal it is a Rich ``Live``; otherwise it logs one line per trial whose state changed
    (other workers' trials included) and nothing else. ``total`` is the number of cells (table
    studies) or trials (search); ``done`` counts trials that finished.
    """

    def __init__(self, load_trials: Callable[[], list[FrozenTrial]], *, console: Console,
                 live: bool, title: str, total: int | None, interval_s: float = 2.0,
                 count_done: Callable[[list[FrozenTrial]], int] | None = None,
                 show_params: bool = False, top: int = 30) -> None:
        self._load = load_trials
        self.console = console
        self.live = live
        self.title = title
        self.total = total
        self.interval_s = interval_s
        self.show_params = show_params
        self.top = top
        self._count_done = count_done or (lambda ts: sum(t.state.is_finished() for t in ts))
        self._seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task("trials", total=total)
        self._running: dict[int, Any] = {}      # trial number -> epoch bar of a running trial
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        if self.live:
            self._live = Live(self._renderable([]), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self._thread = threading.Thread(target=self._run, name="leaderboard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.refresh()
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _renderable(self, rows: list[LeaderboardRow]) -> Group:
        return Group(render_table(rows, title=self.title, top=self.top, show_params=self.show_params),
                     self._progress)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a transient storage read error must not kill the display
                logging.getLogger("eabench.studies").debug("leaderboard refresh failed: %s", exc)

    def _update_epoch_bars(self, trials: list[FrozenTrial]) -> None:
        """One bar per RUNNING trial (any worker): epochs done of the trial's total."""
        running = {t.number: t for t in trials if t.state == TrialState.RUNNING}
        for number in list(self._running):
            if number not in running:
                self._progress.remove_task(self._running.pop(number))
        for number, t in running.items():
            ua = t.user_attrs
            label = f"  #{number} {ua.get('variant', '?')} s{ua.get('seed', '?')} epochs"
            done = int(ua["last_epoch"]) + 1 if isinstance(ua.get("last_epoch"), int) else 0
            if number not in self._running:
                self._running[number] = self._progress.add_task(label, total=ua.get("epochs"))
            self._progress.update(self._running[number], description=label, completed=done,
                                  total=ua.get("epochs"))

    def refresh(self) -> None:
        with self._lock:
            trials = self._load()
            rows = leaderboard_rows(trials)
            self._progress.update(self._task, completed=self._count_done(trials), total=self.total)
            if self._live is not None:
                self._update_epoch_bars(trials)
                self._live.update(self._renderable(rows))
                return
            for r in sorted(rows, key=lambda x: x.number):
                if r.state in ("COMPLETE", "PRUNED", "FAIL", "DUPLICATE") and self._seen.get(r.number) != r.state:
                    self.console.log(plain_line(r), highlight=False)
                self._seen[r.number] = r.state


def trials_loader(study: optuna.Study) -> Callable[[], list[FrozenTrial]]:
    return lambda: study.get_trials(deepcopy=False)

