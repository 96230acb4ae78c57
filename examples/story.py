"""The parts the end-to-end examples share: timed steps, the pipeline's commands, the live processes, the summary.

Nothing here is special to an env: examples/radio_antijam.py (the C radio simulator), drone_hover.py and
robot_linefollow.py (`edge-rl device` playing the env) put the same pieces together:

- `Steps`: numbered steps with their wall time, printed as they start and end;
- `cli`: an `edge-rl` command run in this process, echoed as the command line a user would type;
- `Live`: the processes of a deployment (`edge-rl broker`, `edge-rl monitor --record`, `edge-rl run
  --telemetry`, the device), each with its log file, stopped in reverse order whatever happens;
- `pty_pair` / `PtyRelay`: serial lines without socat (a device on a pty master, or two ptys relayed);
- `Record`: the monitor's recording read back: samples (steps, success rate, promotions, rollbacks, safe
  actions) and events, with the daemon's step at any moment of its monotonic clock;
- `window_means`, `summary_rows`, `plot`: success per window of steps from the samples, the table, the PNG.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EDGE_RL = [sys.executable, "-m", "edge_rl.cli"]
BAUD = 115200
GATE_MARKERS = ("candidate_promoted", "rollback", "drift_alarm", "fallback")


# -- progress --------------------------------------------------------------------------------------------
class Steps:
    """`with steps.step("train the teacher"):` prints `[1/8] train the teacher` and then its wall time."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.times: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        t = time.monotonic()
        yield
        took = time.monotonic() - t
        self.times.append((title, took))
        print(f"[{self.done}/{self.total}] done in {took:.1f} s (total {self.elapsed():.0f} s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def cli(*args: str | Path) -> None:
    """Run `edge-rl ARGS` in this process (as the user would type it: echoed first); exit on failure."""
    from edge_rl.cli import main as edge_rl

    argv = [str(a) for a in args]
    print("  $ edge-rl " + shlex.join(relative(a) for a in argv), flush=True)
    code = edge_rl(argv)
    if code:
        raise SystemExit(f"edge-rl {argv[0]} failed with exit code {code}")


def relative(arg: str) -> str:
    """Paths under the repository shown relative to it (the commands read as a user in the checkout types them)."""
    return arg.replace(str(ROOT) + os.sep, "")


# -- serial lines without socat -------------------------------------------------------------------------------
def pty_pair() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) in raw mode: the slave's line discipline must not echo or translate.

    Keep the slave fd open until the end: while it is open, the master never reads EIO between the
    moments a process opens or closes the slave.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    return master, slave, os.ttyname(slave)


class PtyRelay:
    """Two ptys joined back to back by a thread (what `socat pty pty` does): two serial paths, one cable."""

    def __init__(self) -> None:
        self._a, self._a_slave, self.a = pty_pair()
        self._b, self._b_slave, self.b = pty_pair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peer = {self._a: self._b, self._b: self._a}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: nobody has this end open at the moment
                    continue
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(peer[fd], view) :]
                    except BlockingIOError:
                        select.select([], [peer[fd]], [], 0.1)
                    except OSError:
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self._a, self._a_slave, self._b, self._b_slave):
            os.close(fd)


def serial_url(path: str) -> str:
    return f"serial://{path}?baud={BAUD}"


# -- the live processes ------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    files: list[IO] = field(default_factory=list)


class Live:
    """The processes of one deployment, each logging to `directory`/<name>.log; all stopped on exit, newest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Proc] = []

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    def start(self, name: str, argv: Sequence[str | Path], out_file: Path | None = None, **popen: Any) -> Proc:
        """`argv` with stderr (and stdout, unless `out_file` or a `stdout=` for Popen) to <name>.log."""
        log = self.directory / f"{name}.log"
        err = log.open("w")
        out = out_file.open("w") if out_file is not None else err
        popen.setdefault("stdin", subprocess.DEVNULL)
        popen.setdefault("stdout", out)
        p = subprocess.Popen([str(a) for a in argv], stderr=err, cwd=ROOT, **popen)
        proc = Proc(name, p, log, [err, out])
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 20.0) -> int:
        """SIGTERM (the daemon saves its state, the monitor writes its table and plot), SIGKILL after `timeout`."""
        p = proc.popen
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in proc.files:
            f.close()
        return p.returncode

    def wait_for_line(self, proc: Proc, match: Callable[[str], bool], timeout: float, path: Path | None = None) -> str:
        """The first line of `path` (default: the process's log) that matches, waiting up to `timeout` seconds."""
        path = path or proc.log
        deadline = time.monotonic() + timeout
        while True:
            text = path.read_text(errors="replace") if path.exists() else ""
            for line in text.splitlines():
                if match(line):
                    return line
            if proc.popen.poll() is not None:
                raise SystemExit(f"{proc.name} exited with {proc.popen.returncode}; see {relative(str(proc.log))}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{proc.name}: nothing expected within {timeout:.0f} s; see {relative(str(proc.log))}")
            time.sleep(0.05)


def start_broker(live: Live) -> str:
    """`edge-rl broker --port 0` (embedded amqtt on 127.0.0.1, a free port); its URL once it listens."""
    out = live.directory / "broker.out"
    say("$ edge-rl broker --port 0")
    proc = live.start("broker", [*EDGE_RL, "broker", "--port", "0"], out_file=out)
    line = live.wait_for_line(proc, lambda s: "listening on" in s, 30, out)
    url = line.rsplit(" ", 1)[1]
    say(f"broker listening on {url}")
    return url


def start_monitor(live: Live, url: str, device: str, record: Path, png: Path) -> Proc:
    """`edge-rl monitor URL --device ID --record FILE --plot PNG --once`; returns once it is connected."""
    record.unlink(missing_ok=True)
    args = [url, "--device", device, "--record", record, "--plot", png, "--once", "--client-id", f"demo-{device}"]
    say("$ edge-rl monitor " + shlex.join(relative(str(a)) for a in args))
    out = live.directory / "monitor.out"
    env = {**os.environ, "COLUMNS": "160"}
    proc = live.start("monitor", [*EDGE_RL, "monitor", *args], out_file=out, env=env)
    live.wait_for_line(proc, lambda s: ": connected" in s, 30)
    time.sleep(0.5)  # its SUBSCRIBE is on the way with the CONNECT's answer: let it land before anything publishes
    return proc


def start_daemon(live: Live, bundle: Path, link: str, args: Sequence[str | Path], state: Path) -> Proc:
    """`edge-rl run BUNDLE --link URL ...`; returns once the bundle is verified (before that nothing is sent)."""
    argv = ["run", bundle, "--link", link, *args, "--state-dir", state, "--json"]
    say("$ edge-rl " + shlex.join(relative(str(a)) for a in argv))
    proc = live.start("daemon", [*EDGE_RL, *argv], out_file=live.directory / "daemon.json")
    events = state / "events.jsonl"
    live.wait_for_line(proc, lambda s: '"kind":"verified"' in s.replace(" ", ""), 120, events)
    say("daemon: bundle verified (hashes, signature, golden I/O), link opening")
    return proc


def stop_and_report(live: Live, proc: Proc, what: str) -> None:
    code = live.stop(proc)
    say(f"{what} stopped (exit {code})")


# -- the monitor's recording ---------------------------------------------------------------------------------
class Record:
    """Samples and events of one device from a `edge-rl monitor --record` file, read incrementally."""

    def __init__(self, path: Path, device: str) -> None:
        self.path, self.device = path, device
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._seen: set[tuple[str, int]] = set()

    def poll(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """New samples and events since the last call (whole lines only; duplicates dropped by boot and seq)."""
        new_samples: list[dict[str, Any]] = []
        new_events: list[dict[str, Any]] = []
        if not self.path.exists():
            return new_samples, new_events
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for raw in data[:end].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            doc = line.get("payload")
            if not isinstance(doc, dict) or doc.get("device") != self.device:
                continue
            key = (doc.get("boot"), doc.get("seq"))
            if doc.get("kind") in ("sample", "event"):
                if key in self._seen:
                    continue
                self._seen.add(key)
            if doc.get("kind") == "sample":
                new_samples.append(doc)
            elif doc.get("kind") == "event":
                new_events.append(doc)
        self.samples += new_samples
        self.events += new_events
        self.samples.sort(key=lambda s: s["mono"])
        return new_samples, new_events

    def steps_at(self, mono: float) -> float:
        """The daemon's step count at a moment of its monotonic clock (interpolated between samples)."""
        if not self.samples:
            return 0.0
        t = [s["mono"] for s in self.samples]
        n = [s["steps"] for s in self.samples]
        return float(np.interp(mono, t, n))

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps at each sample's end, transitions it covers, its success rate) of samples with a rate."""
        ends, counts, rates, previous = [], [], [], 0
        for s in self.samples:
            covered = s["steps"] - previous
            previous = s["steps"]
            if s.get("success_rate") is not None and covered > 0:
                ends.append(s["steps"])
                counts.append(covered)
                rates.append(s["success_rate"])
        return np.array(ends, float), np.array(counts, float), np.array(rates, float)

    def last(self, key: str, default: Any = 0) -> Any:
        return self.samples[-1].get(key, default) if self.samples else default

    def marks(self) -> list[tuple[str, float, dict[str, Any]]]:
        """(event, daemon step, its data) of the gate's markers: promotions, rollbacks, drift alarms, fallbacks."""
        return [
            (e["event"], self.steps_at(e["mono"]), e.get("data", {}))
            for e in self.events
            if e.get("event") in GATE_MARKERS
        ]


def window_mean(ends: np.ndarray, counts: np.ndarray, rates: np.ndarray, lo: float, hi: float) -> float:
    """Success over the steps in [lo, hi): each sample weighted by how many of its transitions fall inside."""
    starts = ends - counts
    inside = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None)
    return float((inside * rates).sum() / inside.sum()) if inside.sum() > 0 else float("nan")


def steps_to_recover(ends: np.ndarray, rates: np.ndarray, switch: float, level: float, hold: int = 5) -> float | None:
    """Steps from the switch to the first sample after which `hold` samples in a row are all >= `level`."""
    after = [i for i in range(len(ends)) if ends[i] > switch]
    for k, i in enumerate(after):
        run = after[k : k + hold]
        if len(run) == hold and all(rates[j] >= level for j in run):
            return float(ends[i] - switch)
    return None


# -- the PNG -------------------------------------------------------------------------------------------------
def plot(
    path: Path,
    title: str,
    record: Record,
    switch: float,
    windows: dict[str, tuple[float, float]],
    best: float,
    truth: tuple[np.ndarray, np.ndarray] | None = None,
    truth_label: str = "",
) -> None:
    """Success per telemetry sample against the daemon's steps, the switch, the windows and the gate's events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends, _, rates = record.curve()
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    colours = {"before": "tab:green", "right after": "tab:red", "after recovery": "tab:blue"}
    for name, (lo, hi) in windows.items():
        ax.axvspan(lo, hi, color=colours.get(name, "grey"), alpha=0.09, linewidth=0)
        ax.text((lo + hi) / 2, 0.02, name, ha="center", va="bottom", fontsize=8, color=colours.get(name, "grey"))
    if truth is not None and len(truth[0]):
        ax.plot(truth[0], truth[1], color="grey", linewidth=1.0, drawstyle="steps-pre", label=truth_label)
    ax.plot(
        ends,
        rates,
        color="black",
        linewidth=1.6,
        marker=".",
        markersize=3,
        label="success rate (telemetry, per sample)",
    )
    ax.axvline(switch, color="tab:red", linewidth=1.5, linestyle="--", label="jammer switch")
    ax.axhline(best, color="tab:green", linewidth=0.8, linestyle=":", label=f"best possible ({best:.2f})")
    ax.axhline(0.9 * best, color="tab:blue", linewidth=0.8, linestyle=":", label="90 % of best")
    styles = {
        "candidate_promoted": ("tab:blue", "^", "promotion"),
        "rollback": ("tab:orange", "v", "rollback"),
        "drift_alarm": ("tab:purple", "x", "drift alarm"),
        "fallback": ("tab:red", "X", "fallback to the bundle"),
    }
    seen: set[str] = set()
    for kind, step, _ in record.marks():
        colour, marker, label = styles[kind]
        y = 1.04 if kind == "candidate_promoted" else 1.0
        ax.plot(
            [step],
            [y],
            marker=marker,
            color=colour,
            markersize=8,
            linestyle="none",
            label=None if kind in seen else label,
            clip_on=False,
        )
        ax.axvline(step, color=colour, linewidth=0.6, alpha=0.5)
        seen.add(kind)
    ax.set_ylim(0, 1.08)
    ax.set_xlim(0, max(ends.max() if len(ends) else 1, switch))
    ax.set_xlabel("daemon step (OBS answered)")
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="center right", ncol=2, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"
