"""MLflow tracking: where runs go (``configure``) and one training run's writer (``RunTracker``).

Default store: ``sqlite:///<root>/mlflow.db`` with artifacts under ``<root>/artifacts`` (the
file store is deprecated in MLflow 3, STACK.md §2.1). ``uri`` or the environment variables
``EABENCH_TRACKING_URI`` / ``MLFLOW_TRACKING_URI`` select another store or a server.

``RunTracker`` talks to ``MlflowClient`` with explicit run ids rather than the fluent API's
thread-local active-run stack, so trials in threads or processes and nested child runs
(``parent_run_id``) need no shared global state. The run schema is docs/ARCHITECTURE.md's.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_EXPERIMENT",
    "NullTracker",
    "RunTracker",
    "TrackingTarget",
    "configure",
    "MLFLOW_UI_PORT",
    "git_commit",
    "mlflow_ui_command",
    "redact_uri",
    "runs_table_url",
    "resolve_uri",
    "status_for_exception",
]

# With a tracking server, MLflow writes "View run ... at: URL" on stdout whenever a run ends, which
# would corrupt the tables and JSON our commands print there; we print the runs-table URL on stderr.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

DEFAULT_EXPERIMENT = "eabench"
# MLflow's UI shows an experiment as model training (not GenAI) when it carries this tag.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_MAX_PARAM_LEN = 6000
_BATCH = 100


# Query parameters that carry secrets in database/HTTP URIs (libpq: password, sslpassword;
# common drivers and proxies: pwd, passwd, token, secret, api_key, access_token).
_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "pwd", "sslpassword", "token", "secret",
                            "api_key", "apikey", "access_token", "auth_token", "client_secret"})


def redact_uri(uri: str) -> str:
    """``uri`` safe to show or log: the userinfo password and secret query parameters become ``***``.

    ``postgresql://alice:pw@db/x?sslmode=require&password=pw`` ->
    ``postgresql://alice:***@db/x?sslmode=require&password=***``. Strings that are not URIs (file
    paths) come back unchanged.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI hidden>"
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in creds else f"{creds}@{host}"
    # secret query values become *** and every other parameter is kept byte for byte
    fields = parts.query.split("&") if parts.query else []
    query = "&".join(f"{f.split('=', 1)[0]}=***" if "=" in f and unquote(f.split("=", 1)[0]).lower()
                     in _SECRET_PARAMS else f for f in fields)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # nothing secret (and urlunsplit would normalise sqlite:////abs paths)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


MLFLOW_UI_PORT = 5000  # mlflow ui's default; the runs-table URL assumes it


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that opens MLflow's UI on this store (credentials in the URI redacted); for a
    tracking server, the server itself."""
    uri = redact_uri(tracking_uri or "sqlite:///runs/mlflow.db")
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the MLflow server)"
    return f"mlflow ui --backend-store-uri {uri} --port {MLFLOW_UI_PORT}"


def runs_table_url(experiment_id: str, port: int = MLFLOW_UI_PORT, base: str | None = None) -> str:
    """Where ``mlflow ui`` shows the experiment's runs table (MLflow 3 opens new experiments on
    their GenAI traces view otherwise)."""
    root = (redact_uri(base).rstrip("/") if base and base.startswith(("http://", "https://"))
            else f"http://127.0.0.1:{port}")
    return f"{root}/#/experiments/{experiment_id}/runs"


def resolve_uri(root: Path | str = Path("runs"), uri: str | None = None) -> str:
    """Explicit ``uri`` > $EABENCH_TRACKING_URI > $MLFLOW_TRACKING_URI > sqlite under ``root``."""
    uri = uri or os.environ.get("EABENCH_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path(root).resolve() / "mlflow.db"
    return f"sqlite:///{db}"


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    experiment: str
    experiment_id: str
    root: Path


def configure(root: Path | str = Path("runs"), uri: str | None = None,
              experiment: str = DEFAULT_EXPERIMENT) -> TrackingTarget:
    """Point MLflow at the store and make sure the experiment exists; returns the target.

    Also sets MLflow's process-wide tracking URI so ``mlflow.search_runs`` etc. see the same store.
    Creating the experiment is race-tolerant (several workers may start at once).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.tracking import MlflowClient

    root = Path(root)
    resolved = resolve_uri(root, uri)
    local = resolved.startswith("sqlite:")
    if local:
        root.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI; put the user's value back, or a
    # later configure(other_root) in this process would silently reuse this store.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(resolved)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    client = MlflowClient(tracking_uri=resolved)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = (root / "artifacts").resolve().as_uri() if local else None
        try:
            exp_id = client.create_experiment(experiment, artifact_location=location,
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # created concurrently by another worker
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # experiments created before the tag existed
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return TrackingTarget(resolved, experiment, exp_id, root)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the harness checkout (``unknown`` outside git), with ``-dirty`` if modified."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def status_for_exception(exc: BaseException | None) -> str:
    """MLflow run status for how a training ended: pruning/interrupts are KILLED, errors FAILED."""
    if exc is None:
        return "FINISHED"
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"TrialPruned", "StopRun", "KeyboardInterrupt"}:
        return "KILLED"
    return "FAILED"


def _str(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(
        value, (list, dict, tuple)) else str(value)
    return text[:_MAX_PARAM_LEN]


class RunTracker:
    """Writes one MLflow run through ``MlflowClient`` (explicit run id, thread-safe enough)."""

    def __init__(self, target: TrackingTarget, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(tracking_uri=target.uri)
        self.run_id = run_id

    @classmethod
    def start(cls, target: TrackingTarget, *, run_name: str | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None) -> RunTracker:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=target.uri)
        all_tags = {k: _str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(target.experiment_id, tags=all_tags, run_name=run_name)
        return cls(target, run.info.run_id)

    @classmethod
    def resume(cls, target: TrackingTarget, run_id: str) -> RunTracker:
        tracker = cls(target, run_id)
        tracker.client.get_run(run_id)  # raises a clear MlflowException if unknown
        tracker.client.update_run(run_id, status="RUNNING")
        return tracker

    # -- writing -----------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any], *, skip_existing: bool = True) -> None:
        """Log params; with ``skip_existing`` values already logged are not re-sent (resume)."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params if skip_existing else {}
        items = [Param(k, _str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _str(v)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i:i + _BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as an image artifact (shown on the run's page in ``mlflow ui``)."""
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_json(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / Path(name).name
            p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            parent = str(Path(name).parent)
            self.log_artifact(p, None if parent == "." else parent)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class NullTracker:
    """Stands in for ``RunTracker`` on non-zero DDP ranks: accepts everything, writes nothing."""

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
