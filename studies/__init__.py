"""Optuna study drivers over the engine: paper-table reproduction and hyperparameter search.

- :mod:`studies.launch`: ``table_study`` / ``search_study`` start a study from what a user asks
  for (``eabench study table|search`` and ``eabench reproduce`` call them);
- :mod:`studies.grid`: a table study's variants, its (variant, seed) cells, the grid sampler and
  the coverage check;
- :mod:`studies.table`: the table study's launcher and workers, exactly once per cell, resumable
  after crashes, any number of worker processes or hosts;
- :mod:`studies.search`: TPE with median pruning over variants and training hyperparameters;
  the space is :mod:`studies.space`;
- :mod:`studies.trial`: one trial = one engine run; :mod:`studies.engine_bridge` turns a trial
  into a ``TrainConfig`` and back into an ``eabench train`` command line;
- :mod:`studies.context`: what all workers of a study share, and its MLflow parent run;
- :mod:`studies.storage`: journal file (one host) or PostgreSQL (several hosts);
- :mod:`studies.gpus`: how many workers, on which GPUs, with how many processes per trial;
- :mod:`studies.torchrun` and :mod:`studies.job`: a trial trained by K processes (torchrun, DDP);
- :mod:`studies.liveness`: who runs a trial, its heartbeat thread, whether its worker still lives;
- :mod:`studies.workers`: worker processes and the sweeper of dead workers' trials;
- :mod:`studies.leaderboard`: the live leaderboard and the ``--json`` output.

Importing the package does nothing; every module is imported on use.
"""
