"""Worker processes that decode videos, one video per worker at a time.

A worker killed mid-video (the kernel's OOM killer sends SIGKILL) fails only that video: the
parent knows which video each worker holds, turns the death into that video's failure reason
and starts a fresh worker for the rest. (``concurrent.futures.ProcessPoolExecutor`` cannot say
which job killed it and breaks every pending future.)
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["DecodePool", "death_reason"]

Job = Any
Result = dict[str, Any]


def death_reason(exitcode: int | None) -> str:
    """Why a worker died, for ``failed.jsonl``."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the decode worker was killed by {name} while decoding this video{hint}"
    return f"the decode worker exited with code {exitcode} while decoding this video"


def _worker_main(conn: Connection, fn: Callable[[Job], Result]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    try:
        import torch

        torch.set_num_threads(1)  # one intra-op thread per worker: keeps forked OpenMP safe
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(fn(job))


class DecodePool:
    """``workers`` processes running ``fn(job) -> result dict`` (``fn`` never raises)."""

    def __init__(self, workers: int, fn: Callable[[Job], Result]) -> None:
        # fork where available, as torch's DataLoader does: no re-import of torch per worker,
        # and ``fn`` (possibly a test's stand-in) needs no pickling
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        self._fn = fn
        self._size = workers
        self._idle: list[tuple[Any, Connection]] = []

    def _start(self) -> tuple[Any, Connection]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self._fn), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], None]) -> None:
        """Run every job (pulled lazily: one in flight per worker); ``on_result`` in the parent."""
        it = iter(jobs)
        busy: dict[Connection, tuple[Any, Job]] = {}
        exhausted = False

        def feed() -> None:
            nonlocal exhausted
            while not exhausted and len(busy) < self._size:
                job = next(it, None)
                if job is None:
                    exhausted = True
                    return
                proc, conn = self._idle.pop() if self._idle else self._start()
                try:
                    conn.send(job)
                except OSError:  # an idle worker that died meanwhile: use a fresh one
                    proc.join()
                    conn.close()
                    proc, conn = self._start()
                    conn.send(job)
                busy[conn] = (proc, job)

        try:
            feed()
            while busy:
                sentinels = {proc.sentinel: conn for conn, (proc, _) in busy.items()}
                ready = wait([*busy, *sentinels])
                # results first: a worker may send its result and exit before we look
                for conn in [r for r in ready if r in busy]:
                    proc, job = busy[conn]
                    try:
                        res = conn.recv()
                    except (EOFError, OSError):
                        proc.join()
                        res = {"error": death_reason(proc.exitcode)}
                        conn.close()
                    else:
                        self._idle.append((proc, conn))
                    del busy[conn]
                    on_result(job, res)
                for s in [r for r in ready if r in sentinels and sentinels[r] in busy]:
                    conn = sentinels[s]
                    proc, job = busy.pop(conn)
                    proc.join()
                    conn.close()
                    on_result(job, {"error": death_reason(proc.exitcode)})
                feed()
        except BaseException:
            for proc, _job in busy.values():
                proc.kill()
                proc.join()
            self.close()
            raise

    def close(self) -> None:
        for proc, conn in self._idle:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._idle.clear()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
