"""One trial as a torchrun job: ``python -m torch.distributed.run ... -m studies.job SPEC.json``.

:mod:`studies.torchrun` writes the spec and starts the job; every rank runs the study's trainer
(the engine, ``run_training``) on the trial's ``TrainConfig`` with the trial's MLflow parent run,
run name and tags. Rank 0 talks back through files named in the spec:

- ``epochs``: one JSON line ``{"epoch": e, "metrics": {...}}`` per finished epoch (the worker
  tails it: leaderboard, pruning);
- ``result``: ``{"ok": true, "result": TrainResult}`` or ``{"ok": false, "type": ..., "error": ...}``.

A watchdog thread on every rank ends the rank when the study worker that started the job (pid
and start time in the spec) or the torchrun agent is gone: a killed worker never leaves a job
training behind while its cell is queued again. SIGTERM ends a rank like Ctrl-C: the engine
records the run KILLED and keeps ``last.pt``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

_WATCH_S = 1.0
_GRACE_S = 30.0   # after SIGTERM, a rank stuck in a collective is ended hard


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _watchdog(owner_pid: int, owner_started: str | None, agent_pid: int) -> None:
    from studies.liveness import process_is

    while True:
        time.sleep(_WATCH_S)
        if os.getppid() != agent_pid or not process_is(owner_pid, owner_started):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(_GRACE_S)
            os._exit(143)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torch.distributed.run ... -m studies.job SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    signal.signal(signal.SIGTERM, _terminate)
    threading.Thread(target=_watchdog, args=(int(spec["owner_pid"]), spec.get("owner_started"), os.getppid()),
                     name="owner-watchdog", daemon=True).start()
    is_main = os.environ.get("RANK", "0") == "0"
    epochs, result_file = Path(spec["epochs"]), Path(spec["result"])

    from harness.train import TrainConfig
    from studies.context import resolve_callable

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if is_main:
            with epochs.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"epoch": int(epoch), "metrics": metrics}) + "\n")

    try:
        trainer = resolve_callable(spec["trainer"])
        result = trainer(TrainConfig.from_dict(spec["config"]), on_epoch=on_epoch,
                         parent_run_id=spec.get("parent_run_id"), run_name=spec.get("run_name"),
                         tags=spec.get("tags") or {}, tracking_uri=spec.get("tracking_uri"))
    except KeyboardInterrupt as exc:
        if is_main:
            _write_json(result_file, {"ok": False, "type": "KeyboardInterrupt", "error": f"killed ({exc})"})
        return 130
    except Exception as exc:  # noqa: BLE001 - reported to the worker, which fails the trial with it
        if is_main:
            _write_json(result_file, {"ok": False, "type": type(exc).__name__, "error": str(exc)})
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        from harness.distributed import cleanup

        cleanup()
    if is_main:
        data = result.to_dict() if hasattr(result, "to_dict") else dict(vars(result))
        _write_json(result_file, {"ok": True, "result": data})
    return 0


if __name__ == "__main__":
    sys.exit(main())
