#!/usr/bin/env python3
"""Open a report page in headless Chromium and fail on what a reader would see broken.

    python .ci/check_page.py runs/report/synthetic-small/index.html [--chromium /usr/bin/chromium]

Checks: every <img> loads (``naturalWidth`` > 0 once lazy images are made eager), the console has no
error (``console.error``, uncaught exceptions, failed resource loads), the page has at least one
result table and every table has data cells. Prints one line per problem on stdout and exits 1 if
there is any, 0 otherwise; 2 when no browser can be started.

The browser is driven through the DevTools protocol over ``--remote-debugging-pipe`` (messages are
JSON separated by NUL bytes on file descriptors 3 and 4), so no websocket client and no browser
download are needed: only Debian's ``chromium`` (``bash .ci/chromium.sh`` installs it).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-pipe",
)

# Lazy images below the fold never load in a headless window: make every image eager and wait.
IMAGES_JS = """(async () => {
  const imgs = [...document.images];
  for (const i of imgs) { i.loading = 'eager'; }
  await Promise.all(imgs.map(i => i.complete && i.naturalWidth ? null : i.decode().catch(() => null)));
  return imgs.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, complete: i.complete}));
})()"""
TABLES_JS = """[...document.querySelectorAll('table')].map(t => ({
  cls: t.className, rows: t.querySelectorAll('tbody tr, tr').length, cells: t.querySelectorAll('td').length,
  text: t.innerText.trim().length}))"""


def find_chromium(explicit: str | None = None) -> str | None:
    for c in (explicit, os.environ.get("EABENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if c and (shutil.which(c) or (Path(c).is_file() and os.access(c, os.X_OK))):
            return shutil.which(c) or c
    return None


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="eabench-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=fds, pass_fds=(3, 4),  # close_fds runs after preexec_fn: 3 and 4 survive
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"the browser closed the DevTools pipe: {err}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluating the check failed: {res['exceptionDetails']}")
        return res["result"].get("value")


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            out.append(f"console error ({e.get('source')}): {e.get('text')} {e.get('url', '')}".rstrip())
    return out


def check_page(index: Path, chromium: str | None = None, timeout: float = 60.0) -> list[str]:
    """Problems a reader of ``index`` would see (empty when the page is fine)."""
    binary = find_chromium(chromium)
    if binary is None:
        raise FileNotFoundError("no Chromium found (bash .ci/chromium.sh installs Debian's package)")
    browser = Browser(binary, timeout)
    try:
        browser.open(Path(index).resolve().as_uri())
        images = browser.evaluate(IMAGES_JS) or []
        tables = browser.evaluate(TABLES_JS) or []
        time.sleep(0.2)  # let late console events arrive
        browser.send("Runtime.evaluate", {"expression": "1"})
        problems = console_errors(browser.events)
    finally:
        browser.close()
    problems += [f"broken image: {i['src']}" for i in images if not i.get("w")]
    if not any("eabench-table" in t["cls"] for t in tables):
        problems.append("no result table on the page")
    problems += [f"empty table ({t['cls'] or 'no class'})" for t in tables if t["cells"] == 0 or not t["text"]]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", type=Path, help="the report's index.html")
    ap.add_argument("--chromium", default=None, help="browser binary (default: $EABENCH_CHROMIUM or chromium)")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    try:
        problems = check_page(args.index, args.chromium, args.timeout)
    except FileNotFoundError as exc:
        print(f"check_page: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {args.index}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
