"""What a fleet of 200 devices at 1 Hz costs `edge-rl monitor`, and how late the operator sees each sample.

Real processes: two Mosquittos bridged on loopback (tests/mosquitto.py: the devices' broker bridges
`edgerl/# both 1` to the monitor's), `python -m edge_rl.monitor.simulate` publishing to the devices'
broker, and `edge-rl monitor` subscribed to the other one, on a pseudo-terminal (so it draws its
live table, exactly as an operator runs it) and, with --web, watched by headless Chromium.

- CPU: utime + stime of the monitor process (/proc/<pid>/stat, all threads) over the window, as % of one core.
- Display lag: for every sample published in the window (its `wall` stamped by the simulator just before
  the PUBLISH; seen by a plain subscriber on the monitor's broker), the time until its device is first
  shown with that `steps` value or a later one (a sample superseded before a redraw is shown by its
  successor: leaving it out would bias the lag low), where the operator looks: in the bytes the monitor
  writes to its terminal (read from the pty master as they come; the terminal emulator's own drawing is
  not included), and in the web page's table (a MutationObserver on the table body, in Chromium: the DOM
  update; the paint follows within a frame). Only samples of devices on screen when published count (the
  terminal shows the rows that fit); those never shown (the device left the screen) are counted apart.
- Delivered samples per second at that subscriber, checked against 0.98 x devices x rate; for reference
  their lag (the bridge and brokers' share) and each Mosquitto's CPU (the bridge's both ends: the
  devices' broker also serves the simulator).

Configurations: `terminal` (60 x 240, the rows that fit), `terminal + 2 web streams` (the same plus --web
with two /events streams: Chromium's page and a reader here counting the bytes one browser is sent),
`tall terminal` (210 rows: all 200 devices drawn, where the monitor slows its redraws).
The bars: lag <= 1 s, CPU <= 30 % of one core, delivery >= 98 %.

    python benchmarks/fleet.py                        # 3 configurations x (10 s warm-up + 60 s), ~4 min
    python benchmarks/fleet.py --window 20 --configs terminal

Writes benchmarks/results/fleet.json.
"""

from __future__ import annotations

import argparse
import bisect
import fcntl
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
EDGE_RL = [sys.executable, "-m", "edge_rl.cli"]
CONFIGS = {"terminal": (60, False), "terminal + 2 web streams": (60, True), "tall terminal": (210, False)}  # rows, web
TAIL_S = 2.0  # samples of the window's last seconds are left out: the display may not have shown them yet
ON_SCREEN_S = 2.0  # a terminal row drawn this recently is on screen (redraws: every 0.5 s, slower if drawing is slow)
DELIVERY_BAR = 0.98  # of devices x rate, samples a second at the plain subscriber
COLUMNS = 240
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
ROW = re.compile(r"^│ (\S+)\s+│(?:[^│]*│){4} +([0-9,]+) │")  # device ... steps (the 6th column)
SEEN_JS = """(() => {
  const body = document.querySelector("#fleet tbody"), at = document.querySelector("#fleet thead tr");
  const steps = [...at.cells].findIndex(c => c.textContent === "steps"), last = new Map();
  window.seen = [];
  new MutationObserver(() => {
    const t = Date.now() / 1000;
    for (const tr of body.rows) {
      const v = tr.cells[steps].textContent;
      if (last.get(tr.dataset.device) === v) continue;
      last.set(tr.dataset.device, v);
      window.seen.push([tr.dataset.device, v, t]);
    }
  }).observe(body, {subtree: true, childList: true, characterData: true});
  return steps;
})()"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Observer:
    """A plain subscriber on the monitor's broker: each sample's `wall` by (device, steps), and when it arrived."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.samples: dict[tuple[str, int], tuple[float, float]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("edgerl/+/telemetry", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        doc = json.loads(message.payload)
        if doc.get("kind") == "sample":
            with self.lock:
                self.samples[(doc["device"], doc["steps"])] = (doc["wall"], time.time())

    def copy(self) -> dict[tuple[str, int], tuple[float, float]]:
        with self.lock:
            return dict(self.samples)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Terminal:
    """`edge-rl monitor` on a pty of `rows` x COLUMNS; every (device, steps) it draws, with when it was read."""

    def __init__(self, url: str, rows: int, web: bool) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
        command = [*EDGE_RL, "monitor", url, *(["--web", "0"] if web else [])]
        self.proc = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.shown: list[tuple[float, str, int]] = []
        self.text = b""  # the first bytes, for the web view's URL
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            at = time.time()
            if len(self.text) < 4096:
                self.text += chunk
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                found = ROW.match(ANSI.sub(b"", line).decode(errors="replace").strip("\r"))
                if found:
                    self.shown.append((at, found.group(1), int(found.group(2).replace(",", ""))))

    def web_url(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not (found := re.search(rb"web view on (http://\S+/)", ANSI.sub(b"", self.text))):
            assert time.monotonic() < deadline, f"no web view URL within {timeout} s: {self.text[-500:]!r}"
            time.sleep(0.1)
        return found.group(1).decode()

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


class StreamCounter:
    """A second /events reader in this process, counting the bytes a browser is sent."""

    def __init__(self, url: str) -> None:
        import urllib.request

        self.bytes: list[tuple[float, int]] = []
        self.stream = urllib.request.urlopen(url + "events", timeout=30)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self.stream.readline():
                self.bytes.append((time.time(), len(line)))
        except (OSError, ValueError):
            return

    def rate(self, start: float, end: float) -> float:
        return sum(n for at, n in self.bytes if start <= at <= end) / (end - start)


def lags(
    shown: list[tuple[float, str, int]],
    samples: dict[tuple[str, int], tuple[float, float]],
    start: float,
    end: float,
    every_row: bool,
) -> tuple[list[float], int]:
    """For each sample with `wall` in [start, end - TAIL_S] of a device on screen when it was published: seconds
    from its `wall` to the first time the device was shown with steps at or past the sample's; and how many
    samples never were (the device left the screen). On the terminal a device is on screen if drawn within
    ON_SCREEN_S before the `wall` (every redraw writes every row shown); the page has a row for every device."""
    times: dict[str, list[float]] = {}
    highest: dict[str, list[int]] = {}  # running maximum of the steps shown: sorted, so bisectable
    for at, device, steps in sorted(shown):
        times.setdefault(device, []).append(at)
        so_far = highest.setdefault(device, [])
        so_far.append(max(steps, so_far[-1]) if so_far else steps)
    out, never = [], 0
    for (device, steps), (wall, _) in samples.items():
        drawn = times.get(device, [])
        if not start <= wall <= end - TAIL_S or not drawn:
            continue
        if not every_row and bisect.bisect_left(drawn, wall - ON_SCREEN_S) == bisect.bisect_right(drawn, wall):
            continue  # not on screen then
        i = bisect.bisect_left(highest[device], steps)
        if i == len(drawn):
            never += 1
        else:
            out.append(drawn[i] - wall)
    return out, never


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": float("nan"), "p95": float("nan"), "max": float("nan")}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median": statistics.median(values), "p95": p95, "max": ordered[-1]}


def one_run(
    config: str, url: str, observer: Observer, brokers: dict[str, int], warmup: float, window: float
) -> dict[str, Any]:
    from tests.chromium import Page

    rows, web = CONFIGS[config]
    terminal = Terminal(url, rows, web)
    page = counter = None
    try:
        if web:
            page = Page(1600, 1000)
            page.navigate(terminal.web_url())
            counter = StreamCounter(terminal.web_url())
            page.wait_for("document.querySelectorAll('#fleet tbody tr').length > 0", 30, "the page's rows")
            page.evaluate(SEEN_JS)
        time.sleep(warmup)
        pids = {"monitor": terminal.proc.pid, **brokers}
        cpu_start, start = {k: cpu_seconds(pid) for k, pid in pids.items()}, time.time()
        time.sleep(window)
        cpu_end, end = {k: cpu_seconds(pid) for k, pid in pids.items()}, time.time()
        assert terminal.proc.poll() is None, "the monitor exited during the window"
        seen = page.evaluate("JSON.stringify(window.seen)") if page is not None else "[]"
    finally:
        if page is not None:
            page.close()
        terminal.close()
    browser = [(t, d, int(v.replace(",", ""))) for d, v, t in json.loads(seen) if v.replace(",", "").isdigit()]
    samples = observer.copy()
    delivered = [arrived - wall for wall, arrived in samples.values() if start <= arrived <= end]
    terminal_lags, terminal_never = lags(terminal.shown, samples, start, end, every_row=False)
    web_lags, web_never = lags(browser, samples, start, end, every_row=True)
    return {
        "cpu_pct": 100 * (cpu_end["monitor"] - cpu_start["monitor"]) / (end - start),
        "broker_cpu_pct": {k: 100 * (cpu_end[k] - cpu_start[k]) / (end - start) for k in brokers},
        "terminal_lag_s": stats(terminal_lags),
        "terminal_never_shown": terminal_never,
        "web_lag_s": stats(web_lags) if web else None,
        "web_never_shown": web_never if web else None,
        "delivered_per_s": len(delivered) / (end - start),
        "delivered_lag_s": stats(delivered),
        "devices_on_terminal": len({d for at, d, _ in terminal.shown if start <= at <= end}),
        "web_stream_bytes_per_s": counter.rate(start, end) if counter is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=200, help="simulated devices (default: 200)")
    parser.add_argument("--rate", type=float, default=1.0, help="samples per device per second (default: 1)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per configuration (default: 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before each window (default: 10)")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)} (default: all)"
    )
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}: one of {', '.join(CONFIGS)}")

    from tests.fleet_rig import wait_for_bridge
    from tests.mosquitto import Mosquitto, bridge_to

    core = Mosquitto(persistence=False).start()
    edge = Mosquitto(persistence=False, extra=bridge_to(core.port)).start()
    simulator = observer = None
    runs: dict[str, dict[str, Any]] = {}
    try:
        wait_for_bridge(core.port)
        observer = Observer(core.port)
        simulator = subprocess.Popen(
            [
                *EDGE_RL[:2],
                "edge_rl.monitor.simulate",
                edge.url,
                "--devices",
                str(args.devices),
                "--rate",
                str(args.rate),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for config in configs:
            print(f"{config}: {args.warmup + args.window:.0f} s", flush=True)
            brokers = {"devices' broker": edge.proc.pid, "monitor's broker": core.proc.pid}  # type: ignore[union-attr]
            runs[config] = one_run(config, core.url, observer, brokers, args.warmup, args.window)
    finally:
        if simulator is not None:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(timeout=30)
        if observer is not None:
            observer.close()
        edge.cleanup()
        core.cleanup()
    report(runs, args)


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    from edge_rl.table import print_table

    def ms(s: dict[str, float] | None, key: str) -> Any:
        return "" if s is None else round(1000 * s[key])

    rows = []
    for config, r in runs.items():
        t, w, d = r["terminal_lag_s"], r["web_lag_s"], r["delivered_lag_s"]
        row = [config, round(r["cpu_pct"], 1), ms(t, "median"), ms(t, "p95"), ms(t, "max"), r["terminal_never_shown"]]
        row += [
            r["devices_on_terminal"],
            ms(w, "median"),
            ms(w, "p95"),
            ms(w, "max"),
            "" if r["web_never_shown"] is None else r["web_never_shown"],
        ]
        rows.append([*row, round(r["delivered_per_s"]), ms(d, "median"), ms(d, "p95")])
    print()
    header = ["monitor", "CPU % of a core", "terminal lag ms p50", "p95", "max", "never shown", "devices on screen"]
    header += ["web lag ms p50", "p95", "max", "never shown", "MQTT samples/s", "delivery ms p50", "p95"]
    print_table(header, rows)
    worst_cpu = max(r["cpu_pct"] for r in runs.values())
    worst_lag = max(s["max"] for r in runs.values() for s in (r["terminal_lag_s"], r["web_lag_s"]) if s and s["n"])
    expected = args.devices * args.rate
    worst_delivery = min(r["delivered_per_s"] for r in runs.values()) / expected
    for config, r in runs.items():
        brokers = ", ".join(f"{name} {pct:.1f} %" for name, pct in r["broker_cpu_pct"].items())
        print(f"{config}: Mosquitto CPU (% of a core): {brokers}")
        if r["web_stream_bytes_per_s"] is not None:
            print(f"{config}: the event stream sends each browser {r['web_stream_bytes_per_s'] / 1000:.0f} kB/s")
    print(
        f"\n{args.devices} devices at {args.rate:g} Hz across two bridged Mosquittos, {args.window:g} s windows: "
        f"monitor CPU at most {worst_cpu:.1f} % of one core (bar: 30 %), display lag at most {worst_lag:.2f} s "
        f"(bar: 1 s), samples delivered at least {100 * worst_delivery:.1f} % of {expected:g}/s "
        f"(bar: {100 * DELIVERY_BAR:.0f} %{'' if worst_delivery >= DELIVERY_BAR else ': MISSED'}); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"settings": vars(args), "cores": os.cpu_count(), "load_average": os.getloadavg(), "configs": runs}
    (RESULTS / "fleet.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
