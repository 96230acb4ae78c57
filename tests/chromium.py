"""Headless Chromium for the web view's tests and benchmark: screenshots, and a page driven over DevTools.

Chromium runs in its own process group with a temporary profile (`--user-data-dir`), so `close()`
kills it and every helper process it started, and nothing is left behind. The DevTools port is
Chromium's own pick (`--remote-debugging-port=0`), read from `DevToolsActivePort` in the profile.
A missing Chromium fails the test with the fix named, never a skip.
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
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group: renderers, GPU and zygote helpers too
    except ProcessLookupError:
        pass
    proc.wait()
    if proc.stderr:
        proc.stderr.close()


def screenshot(url: str, out: Path, width: int, height: int, timeout: float = 60.0, delay_ms: int = 0) -> None:
    """`chromium --screenshot=OUT --window-size=W,H URL` (after `delay_ms` of the page's own time)."""
    profile = Path(tempfile.mkdtemp(prefix="edgerl-chromium-"))
    args = [f"--screenshot={out}", f"--window-size={width},{height}", *([f"--timeout={delay_ms}"] if delay_ms else [])]
    proc = _run([*args, url], profile)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chromium --screenshot did not finish within {timeout} s") from None
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
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"chromium exited with {self.proc.returncode}: {err.strip()[-500:]}")
            try:
                return int(active.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"chromium wrote no DevToolsActivePort within {timeout} s")

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are skipped."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-able), or an AssertionError with the page's exception."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy (bounded); its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.1)
        return value

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        _kill_group(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)
