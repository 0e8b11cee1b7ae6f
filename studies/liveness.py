"""Whether the worker of a RUNNING trial still lives: who runs it, its heartbeat, and the verdict.

The journal storage has no heartbeat, so a worker killed with ``kill -9`` leaves its trial RUNNING
forever (STACK.md §1.7). Every trial therefore records its worker (:func:`worker_attrs`): host,
pid, the kernel's boot id and the process's start time; and a daemon thread (:class:`Heartbeat`)
refreshes the trial's ``heartbeat`` attribute every few seconds while the trial runs, however
long an epoch or a first cache build takes.

:func:`is_stale` judges a RUNNING trial:

- same host: alive only if the boot id is the recorded one and a process with the recorded pid
  exists *and* started at the recorded time. A pid alone is not enough: after a reboot or a
  container restart the pid may belong to another process, and the trial would stay RUNNING
  (and the table's last worker wait for it) forever;
- another host: alive while its heartbeat is younger than ``stale_after_s`` (default 5 minutes,
  i.e. several missed beats at the default interval of 60 s).

``EABENCH_WORKER_HOST`` overrides the host name (containers that share a host name; tests that
play two hosts on one machine).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Self

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.processes import process_alive

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "HEARTBEAT_INTERVAL_S",
    "HOST",
    "Heartbeat",
    "boot_id",
    "heartbeat_interval",
    "is_stale",
    "process_alive",
    "process_is",
    "process_start_time",
    "worker_attrs",
]

log = logging.getLogger("eabench.studies")

HOST = os.environ.get("EABENCH_WORKER_HOST") or socket.gethostname()
# Another host's trial is presumed dead when its heartbeat is this old (five missed beats).
DEFAULT_STALE_AFTER_S = 300.0
HEARTBEAT_INTERVAL_S = 60.0
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def heartbeat_interval(stale_after_s: float) -> float:
    """Seconds between beats: 60 s, or less so that at least five beats fit in ``stale_after_s``."""
    return max(0.1, min(HEARTBEAT_INTERVAL_S, stale_after_s / 5))


def boot_id() -> str | None:
    """An id of the running kernel boot (Linux), or psutil's boot time elsewhere; None if unknown."""
    try:
        with open(_BOOT_ID, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        pass
    try:
        import psutil  # optional (eabench[sysmetrics]); only needed where /proc is missing
    except ImportError:
        return None
    return f"boot:{psutil.boot_time():.0f}"


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque comparable string; None if unknown or gone.

    Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot). Elsewhere psutil's
    ``create_time`` if installed. The prefix keeps values of the two sources from ever comparing equal.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return f"proc:{fields[19]}"  # fields[0] is field 3 (state), so field 22 is fields[19]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # /proc exists: no such process
    except (OSError, IndexError):
        return None
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"psutil:{psutil.Process(pid).create_time():.3f}"
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied: unknown
        return None


def process_is(pid: int, started: str | None, boot: str | None = None) -> bool:
    """Whether the process recorded as (``pid``, ``started``, ``boot``) still runs on this host.

    A missing record (``None``, older trials) is not held against the process.
    """
    current_boot = boot_id()
    if boot and current_boot and boot != current_boot:
        return False  # the host rebooted since: every process of that boot is gone
    if not process_alive(pid):
        return False
    if started:
        now = process_start_time(pid)
        if now is not None and now != started:
            return False  # the pid was handed to another process
    return True


def worker_attrs() -> dict[str, Any]:
    """User attributes that identify the current process as the worker of a trial."""
    pid = os.getpid()
    attrs = {"worker_host": HOST, "worker_pid": pid, "worker_boot_id": boot_id(),
             "worker_started": process_start_time(pid), "heartbeat": time.time()}
    return {k: v for k, v in attrs.items() if v is not None}


def _last_sign_of_life(trial: FrozenTrial) -> float:
    beat = trial.user_attrs.get("heartbeat")
    if isinstance(beat, (int, float)):
        return float(beat)
    if trial.datetime_start is not None:
        return trial.datetime_start.timestamp()
    return time.time()


def is_stale(trial: FrozenTrial, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
             now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker is dead (see the module docstring)."""
    if trial.state != TrialState.RUNNING:
        return False
    ua = trial.user_attrs
    host, pid = ua.get("worker_host"), ua.get("worker_pid")
    if host == HOST and isinstance(pid, int):
        return not process_is(pid, ua.get("worker_started"), ua.get("worker_boot_id"))
    now = time.time() if now is None else now
    return now - _last_sign_of_life(trial) > stale_after_s


class Heartbeat:
    """Refreshes a running trial's ``heartbeat`` user attribute from a daemon thread.

    Beats every ``interval_s`` seconds from ``__enter__`` to ``__exit__``, independent of what the
    training loop does; stops by itself once the trial is finished. A failed write (a database
    blip) is logged and retried at the next beat.
    """

    def __init__(self, trial: optuna.Trial, interval_s: float) -> None:
        self._storage = trial.storage
        self._trial_id = trial._trial_id
        self.number = trial.number
        self.interval_s = interval_s
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-t{self.number}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._storage.set_trial_user_attr(self._trial_id, "heartbeat", time.time())
                self.beats += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            except Exception as exc:  # noqa: BLE001 - the next beat retries; the trial goes on
                log.warning("heartbeat of trial %d not written: %s", self.number, exc)
