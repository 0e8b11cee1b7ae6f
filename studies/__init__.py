"""Optuna study drivers over the engine: paper-table reproduction and hyperparameter search.

- :mod:`studies.table`: a GridSampler over a table's variants x seeds, exactly once per cell,
  resumable after crashes, any number of worker processes or hosts (``eabench study table``).
- :mod:`studies.search`: TPE with median pruning over variants and training hyperparameters
  (``eabench study search``); the space is :mod:`studies.space`.
- :mod:`studies.storage`: journal file (one host) or PostgreSQL (several hosts).
- :mod:`studies.workers`: worker identity, liveness and the sweeper of dead workers' trials.
- :mod:`studies.leaderboard`: the live leaderboard and the ``--json`` output.

Importing the package does nothing; every module is imported on use.
"""
