"""Which GPUs each worker of a study gets, and how many processes train one trial.

``eabench study table ... --gpus 0,1,2,3 --nproc-per-trial 2`` runs 4 / 2 = 2 workers, pinned to
GPUs {0,1} and {2,3} (``CUDA_VISIBLE_DEVICES`` set in the worker process before CUDA starts); each
trial of a worker is a torchrun job of 2 processes on its 2 GPUs (:mod:`studies.torchrun`).

How ``--workers``, ``--gpus`` and ``--nproc-per-trial K`` combine (:func:`plan_workers`):

1. ``--gpus LIST``: ``len(LIST) / K`` workers; ``--workers`` may be left out, or must say the same;
2. ``--gpus`` left out, ``--workers N``: the first ``N * K`` visible GPUs (an error if fewer are
   visible); on a host without GPUs, N workers whose trials run K CPU (gloo) processes each;
3. both left out: every visible GPU; on a host without GPUs, one worker;
4. ``--gpus none`` (or ``--device cpu`` with ``--gpus`` left out): no GPU is pinned, ``--workers``
   workers (default 1), each trial K CPU processes.

GPU indices count the launcher's visible devices, so under ``CUDA_VISIBLE_DEVICES=4,5,6,7`` the
``--gpus 0,1`` are the physical devices 4 and 5.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import ConfigError

__all__ = ["WorkerPlan", "parse_gpus", "pin_gpus", "plan_gpu_workers", "plan_workers", "visible_gpus"]

_NONE = ("none", "cpu", "")


def parse_gpus(text: str) -> tuple[int, ...]:
    """``"0,1,2,3"`` or ``"0-3"`` (or a mix, ``"0-1,4"``) -> GPU indices; ``"none"`` -> ``()``."""
    if text.strip().lower() in _NONE:
        return ()
    out: list[int] = []
    for item in (x.strip() for x in text.split(",")):
        try:
            if "-" in item:
                lo, hi = (int(x) for x in item.split("-", 1))
                if hi < lo:
                    raise ValueError
                out += range(lo, hi + 1)
            else:
                out.append(int(item))
        except ValueError:
            raise ConfigError(f"--gpus {text!r}: expected GPU indices like 0,1,2,3 or 0-3 (or none), "
                              f"not {item!r}") from None
    return tuple(out)


def visible_gpus() -> list[int]:
    """``range(torch.cuda.device_count())``: counted through NVML, so CUDA is not initialised here."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def plan_gpu_workers(gpus: Sequence[int], nproc_per_trial: int) -> list[tuple[int, ...]]:
    """Split ``gpus`` into consecutive groups of ``nproc_per_trial``: one group per worker.

    ``plan_gpu_workers([0, 1, 2, 3], 2) == [(0, 1), (2, 3)]``.
    """
    if nproc_per_trial < 1:
        raise ConfigError(f"--nproc-per-trial {nproc_per_trial}: must be at least 1")
    if not gpus:
        raise ConfigError("--gpus lists no GPU; give indices like 0,1 or leave it out (--gpus none: CPU)")
    if any(g < 0 for g in gpus):
        raise ConfigError(f"--gpus {_fmt(gpus)}: GPU indices are 0 or more")
    dup = sorted({g for g in gpus if list(gpus).count(g) > 1})
    if dup:
        raise ConfigError(f"--gpus {_fmt(gpus)} lists GPU {_fmt(dup)} twice; each GPU serves one worker")
    if len(gpus) % nproc_per_trial:
        raise ConfigError(
            f"--gpus {_fmt(gpus)} ({len(gpus)} GPUs) cannot be split into workers of --nproc-per-trial "
            f"{nproc_per_trial} GPUs each; give a multiple of {nproc_per_trial} GPUs")
    return [tuple(gpus[i:i + nproc_per_trial]) for i in range(0, len(gpus), nproc_per_trial)]


@dataclass(frozen=True)
class WorkerPlan:
    """One entry per worker: its GPU indices, or None (no GPU pinned); K processes per trial."""

    slots: tuple[tuple[int, ...] | None, ...]
    nproc_per_trial: int = 1

    @property
    def n_workers(self) -> int:
        return len(self.slots)

    @property
    def pinned(self) -> bool:
        return any(s is not None for s in self.slots)

    def describe(self) -> str:
        per = f", {self.nproc_per_trial} processes per trial" if self.nproc_per_trial > 1 else ""
        if not self.pinned:
            return f"{self.n_workers} worker(s){per}"
        return f"{self.n_workers} worker(s) on GPUs " + " | ".join(_fmt(s or ()) for s in self.slots) + per


def plan_workers(*, workers: int | None, gpus: Sequence[int] | None, nproc_per_trial: int = 1,
                 visible: Sequence[int] = ()) -> WorkerPlan:
    """The workers of a study from ``--workers``, ``--gpus`` (None: left out; ``()``: none) and
    ``--nproc-per-trial``, given this host's ``visible`` GPUs (rules in the module docstring)."""
    if nproc_per_trial < 1:
        raise ConfigError(f"--nproc-per-trial {nproc_per_trial}: must be at least 1")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if gpus is not None and len(gpus) == 0:  # --gpus none
        return WorkerPlan((None,) * (workers or 1), nproc_per_trial)
    if gpus is None:
        if not visible:  # a host without GPUs
            return WorkerPlan((None,) * (workers or 1), nproc_per_trial)
        if workers is None:
            if len(visible) % nproc_per_trial:
                usable = visible[:len(visible) // nproc_per_trial * nproc_per_trial]
                hint = f" (e.g. --gpus {_fmt(usable)})" if usable else ""
                raise ConfigError(
                    f"this host sees {len(visible)} GPUs, not a multiple of --nproc-per-trial {nproc_per_trial}; "
                    f"pick them with --gpus{hint}")
            gpus = list(visible)
        else:
            need = workers * nproc_per_trial
            if need > len(visible):
                raise ConfigError(
                    f"--workers {workers} x --nproc-per-trial {nproc_per_trial} needs {need} GPUs; this host sees "
                    f"{len(visible)} ({_fmt(visible)}); lower --workers, or pass --gpus none to train on the CPU")
            gpus = list(visible[:need])
    else:
        missing = [g for g in gpus if g not in visible]
        if missing:
            seen = f"GPUs {_fmt(visible)}" if visible else "no GPU"
            raise ConfigError(f"--gpus {_fmt(gpus)}: this host sees {seen}, not {_fmt(missing)}; "
                              "use --gpus none to train on the CPU")
    slots = plan_gpu_workers(list(gpus), nproc_per_trial)
    if workers is not None and workers != len(slots):
        raise ConfigError(
            f"--workers {workers} conflicts with --gpus {_fmt(gpus)} --nproc-per-trial {nproc_per_trial}, "
            f"which make {len(slots)} worker(s) of {nproc_per_trial} GPU(s); leave --workers out (the GPUs decide)")
    if len(slots) == 1 and sorted(slots[0]) == sorted(visible):
        # One worker on every visible GPU: nothing to pin, so it may run in the launcher's process.
        return WorkerPlan((None,), nproc_per_trial)
    return WorkerPlan(tuple(slots), nproc_per_trial)


def pin_gpus(gpus: Sequence[int]) -> str:
    """Make ``gpus`` (indices among the visible devices) this process's only CUDA devices.

    Must run before CUDA is initialised in the process (a spawned worker's first step).
    Returns the new ``CUDA_VISIBLE_DEVICES``.
    """
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError("pin_gpus: CUDA is already initialised in this process; pin before using CUDA")
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [x.strip() for x in current.split(",") if x.strip()] if current else None
    if names is not None and any(g >= len(names) for g in gpus):
        raise ConfigError(f"--gpus {_fmt(gpus)}: only {len(names)} devices in CUDA_VISIBLE_DEVICES={current}")
    value = ",".join(names[g] if names is not None else str(g) for g in gpus)
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    return value


def _fmt(gpus: Sequence[int]) -> str:
    return ",".join(map(str, gpus))
