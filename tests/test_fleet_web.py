"""`edge-rl monitor --web` in headless Chromium: a screenshot of the fleet page, the page's table following
telemetry live (cells change, a new device gets a row, an alarm shows) as it arrives over MQTT, and (the web
view in-process) a busy monitor and a restarted one as the page shows them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from edge_rl.monitor import web
from edge_rl.monitor.simulate import SimDevice
from tests.chromium import Page, screenshot
from tests.fleet_rig import MonitorThread, SimulatedFleet, publish, raw_get, reset, start_monitor, stop, wait_until

WIDTH, HEIGHT = 1400, 900


def wait_devices(url: str, count: int, timeout: float = 30.0) -> dict:
    """Until /fleet.json lists `count` devices with samples."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url + "fleet.json", timeout=10) as response:
            summary = json.load(response)
        ready = [d for d in summary["devices"].values() if d["steps"] is not None]
        if len(ready) >= count:
            return summary
        assert time.monotonic() < deadline, f"{len(ready)} of {count} devices on /fleet.json after {timeout} s"
        time.sleep(0.2)


def rollback(port: int, name: str) -> None:
    """A device that comes online, reports a rollback and a sample: its row must show the alarm."""
    device = SimDevice(name, 99, 1.0, events=0)
    publish(port, [device.status("online"), device.event("rollback"), *device.tick()])


def text_lines(png: Path) -> tuple[np.ndarray, int]:
    """The image, and how many horizontal bands of dark pixels (lines of text) it has."""
    image = imread(png)
    ink = image[..., :3].mean(axis=2) < 0.5
    inked = ink.mean(axis=1) > 0.002
    return image, int(np.count_nonzero(inked[1:] & ~inked[:-1]))


def test_screenshot_of_the_fleet_page(mosquitto, tmp_path) -> None:
    proc, url = start_monitor(mosquitto.url, "--once")
    fleet = SimulatedFleet(mosquitto.port, 30, None, rate_hz=2.0, seed=1, events=0)
    try:
        wait_devices(url, 30)  # the monitor has subscribed: a one-off message now cannot pass it by
        rollback(mosquitto.port, "sim-0005x")
        wait_devices(url, 31)
        out = tmp_path / "fleet.png"
        screenshot(url, out, WIDTH, HEIGHT)
    finally:
        fleet.stop()
        stop(proc)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (WIDTH, HEIGHT)
    image, lines = text_lines(out)
    assert image.shape[:2] == (HEIGHT, WIDTH) and image[..., :3].std() > 0.05, "a blank page"
    assert lines >= 30, f"{lines} lines of text: the table did not render"  # title, caption, header, >= 27 rows
    rgb = image[..., :3]
    red = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.2)
    assert red.sum() > 50, "no alarm drawn in red (sim-0005x reported a rollback)"
    assert blue.sum() > 500, "no sparklines drawn"


def cell(device: str, column: str) -> str:
    return f'document.querySelector(\'tr[data-device="{device}"] td[data-col="{column}"]\')?.textContent'


def test_the_page_follows_telemetry_live(mosquitto) -> None:
    proc, url = start_monitor(mosquitto.url, "--once")
    fleet = SimulatedFleet(mosquitto.port, 10, None, rate_hz=2.0, seed=2, events=0)
    page = Page(WIDTH, HEIGHT)
    try:
        wait_devices(url, 10)
        page.navigate(url)
        assert page.wait_for("document.querySelectorAll('tbody tr').length === 10", 20, "10 rows")
        assert page.wait_for("document.getElementById('state').textContent === 'live'", 20, "the stream to open")
        steps, messages = page.evaluate(cell("sim-0003", "steps")), page.evaluate(cell("sim-0003", "msgs dup/gap/bad"))
        page.wait_for(f"{cell('sim-0003', 'steps')} !== {json.dumps(steps)}", 15, "sim-0003's steps to change")
        page.wait_for(f"{cell('sim-0003', 'msgs dup/gap/bad')} !== {json.dumps(messages)}", 15, "its message count")
        assert page.evaluate(cell("sim-0003", "msgs dup/gap/bad")).endswith(" 0/0/0")
        assert page.evaluate(cell("sim-0003", "status")) == "online"
        assert re.fullmatch(r"[0-9]s", page.evaluate(cell("sim-0003", "seen")))  # sent apart from the rows
        curve = 'document.querySelector(\'tr[data-device="sim-0003"] td[data-col="success"] path\')'
        assert page.evaluate(f"{curve}.getAttribute('d')").count("L") >= 1  # a sparkline of several samples
        assert page.evaluate(cell("late-0000", "steps")) is None
        rollback(mosquitto.port, "late-0000")  # a new device, with an alarm
        page.wait_for(f"{cell('late-0000', 'alarms')} === 'rollback'", 15, "late-0000's row with its alarm")
        assert page.evaluate("document.querySelector('tr[data-device=\"late-0000\"]').classList.contains('alarm')")
        names = page.evaluate("[...document.querySelectorAll('tbody tr')].map(r => r.dataset.device)")
        assert names == sorted(names) and len(names) == 11  # sorted by name, the newcomer in its place
        assert page.evaluate(cell("sim-0003", "alarms")) == "ok"
        page.evaluate("document.getElementById('only').click()")  # only devices with alarms: the header stays
        assert page.evaluate("getComputedStyle(document.querySelector('#fleet thead tr')).display") != "none"
        shown = "[...document.querySelectorAll('tbody tr')].filter(r => getComputedStyle(r).display !== 'none')"
        assert page.evaluate(f"{shown}.map(r => r.dataset.device)") == ["late-0000"]
    finally:
        page.close()
        fleet.stop()
        stop(proc)


STATE = "document.getElementById('state').textContent"


def test_a_busy_monitor_says_so_and_the_page_retries(monkeypatch) -> None:
    """Every stream taken: the page shows its rendering and `busy`, and goes live once a slot is free."""
    monkeypatch.setattr(web, "MAX_STREAMS", 1)
    monkeypatch.setattr(web, "BUSY_RETRY_MS", 300)
    monitor = MonitorThread(3)
    held = raw_get(monitor.view.port, "/events")
    page = Page(WIDTH, HEIGHT)
    try:
        wait_until(lambda: monitor.view.streams == 1 and monitor.fleet.devices, 10, "the one stream taken")
        page.navigate(monitor.view.url)
        page.wait_for(f"{STATE} === 'busy: 1 viewers, retrying'", 20, "the busy notice")
        assert page.evaluate("document.querySelectorAll('tbody tr').length") == 3  # the page's own rendering
        reset(held)
        page.wait_for(f"{STATE} === 'live'", 20, "the stream once the slot was given back")
    finally:
        page.close()
        monitor.close()


def test_a_restarted_monitor_starts_the_table_afresh() -> None:
    """The page reconnects to a new monitor on the same port: the old devices' rows go, the new ones come."""
    first = MonitorThread(3)
    port = first.view.port
    page = Page(WIDTH, HEIGHT)
    second = None
    try:
        wait_until(lambda: first.fleet.devices, 10, "a device")
        page.navigate(first.view.url)
        page.wait_for(f"{STATE} === 'live' && document.querySelectorAll('tbody tr').length === 3", 20, "3 rows")
        first.close()
        second = MonitorThread(1, port)  # one device: the page must drop two rows, not keep them
        page.wait_for("document.querySelectorAll('tbody tr').length === 1", 20, "the new monitor's one row")
        assert page.evaluate(f"{STATE} === 'live'")
    finally:
        page.close()
        first.close()  # again, if the test failed before: closing is idempotent
        if second is not None:
            second.close()
