"""Where a study lives: an Optuna journal file on one host, an RDB (PostgreSQL) across hosts.

``--storage`` accepts:

- nothing: the journal file ``<runs>/studies/<study>.journal`` (one host, any number of worker
  processes; Optuna's recommended multi-process file storage);
- a path ending in ``.journal`` (or ``journal:PATH``): that journal file;
- an SQLAlchemy URL (``postgresql+psycopg2://user@host:5432/db``; ``sqlite:///x.db`` works for a
  single worker only): Optuna's RDB storage with a heartbeat, so trials of a worker that died on
  another host are failed and re-queued by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.

Browse any of them with ``optuna-dashboard <storage>`` (see :func:`dashboard_command`).
"""
from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from harness.errors import ConfigError
from harness.tracking import redact_uri

__all__ = ["StorageSpec", "dashboard_command", "open_storage", "resolve_storage"]

_RDB_PREFIXES = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql")

# Heartbeat every 20 s; a trial silent for 2 min is stale. Training epochs on a GPU write metrics far
# more often than that, and the heartbeat thread runs independently of the training loop anyway.
HEARTBEAT_INTERVAL_S = 20
HEARTBEAT_GRACE_S = 120


@dataclass(frozen=True)
class StorageSpec:
    """A resolved ``--storage``: kind ``journal`` (with ``path``) or ``rdb`` (with ``url``)."""

    kind: str
    path: Path | None = None
    url: str | None = None

    @property
    def display(self) -> str:
        """The string a user would pass back to ``--storage`` or optuna-dashboard, without secrets
        (``harness.tracking.redact_uri``: the userinfo password and password-like query parameters)."""
        if self.kind == "journal":
            return str(self.path)
        assert self.url is not None
        return redact_uri(self.url)

    @property
    def arg(self) -> str:
        """The value that reopens this storage from another process (``--storage`` form)."""
        return str(self.path) if self.kind == "journal" else str(self.url)


def resolve_storage(storage: str | None, study_name: str, root: Path = Path("runs")) -> StorageSpec:
    """Interpret ``--storage`` (see module docstring); never touches the disk or network."""
    if storage is None or storage == "":
        return StorageSpec("journal", path=(root / "studies" / f"{study_name}.journal"))
    if storage.startswith("journal:"):
        return StorageSpec("journal", path=Path(storage[len("journal:"):]))
    if "://" in storage:
        scheme = storage.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in _RDB_PREFIXES:
            raise ConfigError(
                f"--storage {storage!r}: unknown URL scheme {scheme!r}; use postgresql+psycopg2://USER@HOST/DB, "
                "a path ending in .journal, or leave it out for runs/studies/<study>.journal"
            )
        return StorageSpec("rdb", url=storage)
    if storage.endswith((".journal", ".log")):
        return StorageSpec("journal", path=Path(storage))
    raise ConfigError(
        f"--storage {storage!r}: not a journal file (must end in .journal) nor a database URL "
        "(postgresql+psycopg2://USER@HOST:PORT/DB)"
    )


def open_storage(spec: StorageSpec, *, heartbeat: bool = True, open_lock: bool = False) -> BaseStorage:
    """Open the storage. Journal files get their folder created; RDB gets the heartbeat.

    ``open_lock`` switches the journal lock from a symlink to an ``O_EXCL`` lock file, for file
    systems without symlinks.
    """
    if spec.kind == "journal":
        assert spec.path is not None
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileOpenLock(str(spec.path)) if open_lock else None
        return JournalStorage(JournalFileBackend(str(spec.path), lock_obj=lock))
    assert spec.url is not None
    kwargs: dict = {}
    if heartbeat and not spec.url.startswith("sqlite"):
        # Heartbeats are "experimental" in Optuna 5.0 (since v2.8); they are the documented multi-node
        # path (STACK.md §1.7), so the warning on every worker start says nothing new.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                message=r".*(heartbeat|RetryHeartbeatStaleTrialCallback).*")
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": HEARTBEAT_GRACE_S,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=3),
        }
    try:
        # pool_pre_ping: long trials leave pooled connections idle for hours; servers drop them.
        return RDBStorage(spec.url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
    except ImportError as exc:
        raise ConfigError(
            f"--storage {spec.display}: the database driver is missing ({_hide(exc, spec)}); "
            "install it with: pip install 'eabench[postgres]'"
        ) from exc
    except Exception as exc:  # sqlalchemy OperationalError etc.: name the URL and the fix
        if isinstance(exc, optuna.exceptions.OptunaError):
            raise
        raise ConfigError(
            f"--storage {spec.display}: cannot open the database ({type(exc).__name__}: {_hide(exc, spec)}). "
            "Check that the server runs, the database exists and the user may connect."
        ) from exc


def _hide(exc: BaseException, spec: StorageSpec) -> str:
    """An error's text without the storage URL's secrets (drivers quote the URL they could not use)."""
    text = str(exc)
    return text.replace(spec.url, spec.display) if spec.url else text


def dashboard_command(spec: StorageSpec) -> str:
    """The shell command that opens optuna-dashboard on this storage."""
    return f"optuna-dashboard {shlex.quote(spec.display)}"
