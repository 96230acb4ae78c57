"""Headless Chromium for the web view's tests and benchmark: screenshots, and a page driven over DevTools.

Chromium runs in its own process group with a temporary profile (`--user-data-dir`), so `close()`
kills it and every helper process it started, and nothing is left behind. The DevTools port is
Chromium's own pick (`--remote-debugging-port=0`), read from `DevToolsActivePort` in the profile.
Its stderr goes to a file in the profile (a pipe nobody reads would block a chatty Chromium once
64 kB are written); a failure quotes the file's tail. A missing Chromium fails the test with the
fix named, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

MISSING = "run .ci/system-deps (installs chromium)"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check"]
FLAGS += ["--disable-extensions", "--mute-audio", "--hide-scrollbars", "--disable-background-networking"]


def binary() -> str:
    """The chromium executable, or a test failure naming the fix (never a skip)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


def _run(args: list[str], profile: Path) -> subprocess.Popen[bytes]:
    command = [binary(), *FLAGS, f"--user-data-dir={profile}", *args]
    with open(profile / "stderr.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def log_tail(profile: Path, chars: int = 1500) -> str:
    """The end of Chromium's stderr, for a failure message."""
    try:
        return (profile / "stderr.log").read_text(errors="replace").strip()[-chars:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group: renderers, GPU and zygote helpers too
    except ProcessLookupError:
        pass
    proc.wait()


def screenshot(url: str, out: Path, width: int, height: int, timeout: float = 60.0, delay_ms: int = 0) -> None:
    """`chromium --screenshot=OUT --window-size=W,H URL` (after `delay_ms` of the page's own time)."""
    profile = Path(tempfile.mkdtemp(prefix="edgerl-chromium-"))
    args = [f"--screenshot={out}", f"--window-size={width},{height}", *([f"--timeout={delay_ms}"] if delay_ms else [])]
    proc = _run([*args, url], profile)
    try:
        code = proc.wait(timeout)
        written = "written" if out.is_file() else "missing"
        assert code == 0 and out.is_file(), (
            f"chromium --screenshot exited with {code}, {out} {written}: {log_tail(profile)}"
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chromium --screenshot did not finish within {timeout} s: {log_tail(profile)}") from None
    finally:
        _kill_group(proc)
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """One headless Chromium with one page, driven over the DevTools protocol (`evaluate`, `navigate`)."""

    def __init__(self, width: int = 1400, height: int = 900, timeout: float = 30.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="edgerl-chromium-"))
        args = ["--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"]
        self.proc = _run(args, self.profile)
        self._id = 0
        try:
            port = self._devtools_port(timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as response:
                targets = json.load(response)
            page = next(t for t in targets if t.get("type") == "page")
            self.ws: ClientConnection = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}: {log_tail(self.profile)}")
            try:
                return int(active.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"chromium wrote no DevToolsActivePort within {timeout} s: {log_tail(self.profile)}")

    def call(self, method: str, timeout: float = 30.0, until: str | None = None, **params: Any) -> dict[str, Any]:
        """One DevTools command, its result; with `until`, then also wait for that event (bounded by the same
        `timeout`). Other events that arrive meanwhile are skipped."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline, result = time.monotonic() + timeout, None
        while result is None or until is not None:
            left = deadline - time.monotonic()
            assert left > 0, f"{method}: no {'reply' if result is None else until} within {timeout} s"
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result = reply["result"]
            elif result is not None and reply.get("method") == until:
                until = None
        return result

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load `url` and return once its load event fired (its scripts have run)."""
        self.call("Page.enable")
        self.call("Page.navigate", timeout, until="Page.loadEventFired", url=url)

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-able), or an AssertionError with the page's exception."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy (bounded); its value. An evaluation that fails
        meanwhile (the page's context replaced by a reload) is retried until the deadline."""
        deadline, failed = time.monotonic() + timeout, ""
        while True:
            try:
                if value := self.evaluate(expression):
                    return value
            except AssertionError as e:
                failed = f" (last error: {e})"
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}{failed}"
            time.sleep(0.1)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        _kill_group(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)
