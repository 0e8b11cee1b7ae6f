"""harness.console: plain heartbeat lines off a terminal, silence on non-zero ranks."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from harness import console


@pytest.fixture()
def captured() -> io.StringIO:
    buf = io.StringIO()
    console.set_console(Console(file=buf, force_terminal=False, width=120))
    yield buf
    console.set_console(None)


def test_plain_lines_with_rate_and_eta(captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    with console.Reporter(heartbeat_s=0.0) as rep:
        assert not rep.live  # a StringIO is not a terminal: no animation
        task = rep.add("epoch 1/2", 4)
        rep.advance(task, 1, items=8, info="loss 2.0000")
        rep.advance(task, 3, items=24)
    lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
    assert any("epoch 1/2: 1/4" in ln and "videos/s" in ln and "ETA" in ln and "loss 2.0000" in ln
               for ln in lines)
    assert any("epoch 1/2: 4/4" in ln for ln in lines)


def test_heartbeat_throttles_and_disabled_reporter_is_silent(captured: io.StringIO) -> None:
    with console.Reporter(heartbeat_s=3600.0) as rep:
        task = rep.add("steps", 10)
        for _ in range(9):
            rep.advance(task, 1)
    assert captured.getvalue().strip() == ""  # no heartbeat due, task not finished
    with console.Reporter(enabled=False) as rep:
        task = rep.add("steps", 1)
        rep.advance(task, 1)
    assert captured.getvalue().strip() == ""


def test_log_only_on_rank_zero(captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    console.log("from rank one")
    monkeypatch.setenv("RANK", "0")
    console.log("from rank zero")
    out = captured.getvalue()
    assert "from rank zero" in out and "from rank one" not in out
