"""Logging for study drivers: one Rich handler on the harness's stderr console, Optuna routed into it."""
from __future__ import annotations

import logging
import os

import optuna
from rich.logging import RichHandler

from harness.console import get_console

__all__ = ["setup_logging"]


def setup_logging(*, verbose: bool = False, prefix: str = "") -> None:
    """Log ``eabench.*`` and Optuna through Rich on stderr (printed above any live display).

    ``prefix`` tags lines of worker processes (``w0``, ``w1``...) so interleaved logs stay readable.
    Idempotent: a second call replaces the handler instead of doubling every line.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    fmt = f"[{prefix}] %(message)s" if prefix else "%(message)s"
    handler = RichHandler(console=get_console(), show_path=False, rich_tracebacks=True, markup=False)
    handler.setFormatter(logging.Formatter(fmt, datefmt="[%X]"))
    handler.set_name("eabench-studies")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "eabench-studies":
            root.removeHandler(h)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger("eabench").setLevel(logging.DEBUG if verbose else logging.INFO)
    # Optuna's own handler would print every message twice; send it through the root logger.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    for noisy in ("alembic", "mlflow", "sqlalchemy", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
