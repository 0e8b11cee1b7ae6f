"""The one Rich console of the harness (stderr) and a progress reporter that degrades to log lines.

On a terminal: a Rich progress display (epochs, steps, evaluation) with throughput and ETA.
When stderr is not a terminal, or ``CI=true``, or ``EABENCH_NO_PROGRESS=1``: nothing animates;
a plain line is printed at most every ``heartbeat_s`` seconds per task and when a task ends
(STACK.md §5: Rich draws nothing while running in a pipe).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Reporter", "get_console", "log", "output_console", "progress_enabled", "set_console"]

_CONSOLE: Console | None = None


def get_console() -> Console:
    """The shared stderr console (created on first use, so importing has no side effect)."""
    global _CONSOLE
    if _CONSOLE is None:
        _CONSOLE = Console(stderr=True)
    return _CONSOLE


def output_console() -> Console:
    """A console for a command's primary output (tables, listings) on **stdout**.

    Logs and progress use :func:`get_console` (stderr). Piped, Rich would assume 80 columns and
    wrap every row; a listing reads better wide, so a pipe gets 200 columns.
    """
    console = Console()
    return console if console.is_terminal else Console(width=200)


def set_console(console: Console | None) -> None:
    """Replace the shared console (tests pass ``Console(file=StringIO(), record=True)``)."""
    global _CONSOLE
    _CONSOLE = console


def progress_enabled(console: Console | None = None) -> bool:
    console = console or get_console()
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        return False
    if os.environ.get("EABENCH_NO_PROGRESS", "").lower() in {"1", "true", "yes"}:
        return False
    return console.is_terminal


def log(message: str) -> None:
    """One log line on stderr (printed above any live progress display); rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") != "0":
        return
    get_console().log(message, highlight=False)


@dataclass
class _Plain:
    description: str
    total: float | None
    completed: float = 0.0
    items: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_print: float = field(default_factory=time.monotonic)


class Reporter:
    """Progress tasks that are Rich bars on a TTY and heartbeat log lines elsewhere.

    ``advance(task, n, items=k)`` counts ``k`` videos for the videos/s column.
    ``enabled=False`` silences everything (non-zero DDP ranks).
    """

    def __init__(self, *, enabled: bool = True, heartbeat_s: float = 30.0) -> None:
        self.enabled = enabled
        self.heartbeat_s = heartbeat_s
        self.console = get_console()
        self.live = enabled and progress_enabled(self.console)
        self._progress: Progress | None = None
        self._plain: dict[int, _Plain] = {}
        self._next = 0

    def __enter__(self) -> Self:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def add(self, description: str, total: float | None) -> int:
        if self._progress is not None:
            return int(self._progress.add_task(description, total=total, rate="", items=0.0,
                                               t0=time.monotonic()))
        tid = self._next
        self._next += 1
        self._plain[tid] = _Plain(description, total)
        return tid

    def reset(self, task: int, description: str, total: float | None) -> None:
        if self._progress is not None:
            self._progress.reset(TaskID(task), total=total, description=description, visible=True,
                                 rate="", items=0.0, t0=time.monotonic())
            return
        if task in self._plain:
            self._plain[task] = _Plain(description, total)

    def advance(self, task: int, n: float = 1.0, *, items: float = 0.0, info: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._progress is not None:
            t = self._progress.tasks[[x.id for x in self._progress.tasks].index(TaskID(task))]
            total_items = t.fields.get("items", 0.0) + items
            dt = max(now - t.fields.get("t0", now), 1e-9)
            rate = f"{total_items / dt:.1f} videos/s" if total_items else ""
            self._progress.update(TaskID(task), advance=n, items=total_items,
                                  rate=" ".join(x for x in (rate, info) if x))
            return
        p = self._plain.get(task)
        if p is None:
            return
        p.completed += n
        p.items += items
        done = p.total is not None and p.completed >= p.total
        if done or now - p.last_print >= self.heartbeat_s:
            p.last_print = now
            dt = max(now - p.started, 1e-9)
            parts = [f"{p.description}: {p.completed:g}" + (f"/{p.total:g}" if p.total else "")]
            if p.items:
                parts.append(f"{p.items / dt:.1f} videos/s")
            if p.total and p.completed and not done:
                parts.append(f"ETA {dt / p.completed * (p.total - p.completed):.0f}s")
            if info:
                parts.append(info)
            log(", ".join(parts))

    def hide(self, task: int) -> None:
        if self._progress is not None:
            self._progress.update(TaskID(task), visible=False)
