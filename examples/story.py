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

import argparse
import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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

    def curve(self, key: str = "success_rate") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps at each sample's end, steps it covers, its `key`) of the samples that have one."""
        ends, counts, rates, previous = [], [], [], 0
        for s in self.samples:
            covered = s["steps"] - previous
            previous = s["steps"]
            if s.get(key) is not None and covered > 0:
                ends.append(s["steps"])
                counts.append(covered)
                rates.append(s[key])
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
    best: float | None,
    truth: tuple[np.ndarray, np.ndarray] | None = None,
    truth_label: str = "",
    metric: str = "success_rate",
    label: str = "success rate",
) -> None:
    """`metric` per telemetry sample against the daemon's steps, the switch, the windows and the gate's events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends, _, rates = record.curve(metric)
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
        label=f"{label} (telemetry, per sample)",
    )
    ax.axvline(switch, color="tab:red", linewidth=1.5, linestyle="--", label="the switch")
    if best is not None:
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
        colour, marker, name = styles[kind]
        y = 1.04 if kind == "candidate_promoted" else 1.0
        ax.plot(
            [step],
            [y],
            marker=marker,
            color=colour,
            markersize=8,
            linestyle="none",
            label=None if kind in seen else name,
            clip_on=False,
        )
        ax.axvline(step, color=colour, linewidth=0.6, alpha=0.5)
        seen.add(kind)
    bottom = min(0.0, float(rates.min()) if len(rates) else 0.0)
    ax.set_ylim(bottom, 1.08)  # success rates, and rewards per step (at most 1 in these envs)
    ax.set_xlim(0, max(ends.max() if len(ends) else 1, switch))
    ax.set_xlabel("daemon step (OBS answered)")
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="center right", ncol=2, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


# -- the pipeline and the live run, for any env ---------------------------------------------------------------
@dataclass
class Scenario:
    """One story: an env, what it is trained on, the shift the device meets in the field, what counts."""

    name: str  # "drone": directory and device id prefix
    env: str
    kwargs: dict[str, Any]
    shift: dict[str, Any]  # the env attributes that change at the switch
    metric: str  # the telemetry sample field the summary and the plot are about: success_rate or reward_mean
    metric_label: str
    train_steps: int
    distill_steps: int = 15_000
    hidden: str = "48,48"  # the student's
    # a wide teacher and a 48,48 int8 student. AntiJam, sweeping -> reactive at 10k of 50k steps: --adapt full
    # recovered (last 5k >= 0.9) in 10 of 10 in-process runs (5 students x 2 learner seeds, mean 0.956) and in
    # every whole pipeline tried; --adapt head in 3 of 8 on the same students (a mediocre early promotion stays)
    teacher_hidden: str = "256,256"


def describe_shift(s: Scenario) -> str:
    return ", ".join(f"{k} {s.kwargs.get(k, 'default')} -> {v}" for k, v in s.shift.items())


def evaluate_on(policy_dir: Path, env: str, kwargs: dict[str, Any], episodes: int = 30) -> tuple[float, float | None]:
    """(mean return, success rate) of the greedy policy over `episodes` on fixed seeds."""
    from edge_rl.evaluate import evaluate
    from edge_rl.policy import Policy

    r = evaluate(Policy.load(policy_dir).act, env, episodes, 50_000, kwargs)
    return float(r.mean_return), (None if r.success_rate is None else float(r.success_rate))


def train_and_compress(s: Scenario, out: Path, seed: int, steps: Steps) -> tuple[Path, Path]:
    """Teacher (`edge-rl train`), int8 student (`distill`), signed bundle (`export`, `verify`): (bundle, key)."""
    teacher, student, bundle, key = out / "teacher", out / "student-int8", out / "bundle", out / "fleet-key"
    title = f"train a DQN teacher ({s.teacher_hidden}) on {s.env} {json.dumps(s.kwargs)} ({s.train_steps:,} steps)"
    with steps.step(title):
        cli(
            "train", s.env, "--env-kwargs", json.dumps(s.kwargs), "--hidden", s.teacher_hidden,
            "--steps", s.train_steps, "--seed", seed, "--out", teacher,
        )  # fmt: skip
        for label, kwargs in (
            ("as trained", s.kwargs),
            (f"after the shift ({describe_shift(s)})", {**s.kwargs, **s.shift}),
        ):
            ret, success = evaluate_on(teacher, s.env, kwargs)
            say(f"teacher {label}: mean return {ret:.1f}, success rate {fmt(success)}")
    with steps.step(f"distill the teacher into an int8 student (hidden {s.hidden}, {s.distill_steps:,} steps)"):
        cli(
            "distill", teacher, "--hidden", s.hidden, "--quant", "int8", "--steps", s.distill_steps,
            "--seed", seed, "--out", student, "--quiet",
        )  # fmt: skip
    with steps.step("export a signed bundle and verify it as the device will"):
        shutil.rmtree(bundle, ignore_errors=True)
        for path in (key, key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        cli("keygen", "--out", key)
        cli("export", student, "--out", bundle, "--sign", key)
        say("the device checks every file's hash, the signature with the pinned public key and the golden I/O:")
        cli("verify", bundle, "--public-key", key.with_suffix(".pub"))
    return bundle, key.with_suffix(".pub")


class Progress:
    """A tqdm bar on a terminal, else a plain line every few seconds; event lines printed above it."""

    def __init__(self, total: int) -> None:
        self.total, self.bar, self.last_line = total, None, 0.0
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=True)

    def update(self, steps: int, status: str) -> None:
        if self.bar is not None:
            self.bar.n = min(steps, self.total)
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.refresh()
        elif time.monotonic() - self.last_line >= 5:
            print(f"  step {steps:>7,}/{self.total:,}  {status}", flush=True)
            self.last_line = time.monotonic()

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"  {text}")
        else:
            print(f"  {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_event(event: dict[str, Any], step: float) -> str | None:
    """A line for the gate's events worth a user's attention, None for the rest."""
    data, kind = event.get("data", {}), event.get("event")
    if kind == "candidate_promoted":
        trial, baseline = data.get("trial", float("nan")), data.get("baseline", float("nan"))
        return (
            f"step {step:,.0f}: candidate promoted: {trial:.3f} reward/step on trial vs the incumbent's {baseline:.3f}"
        )
    if kind in ("rollback", "drift_alarm", "fallback", "confirmed", "safe_action"):
        return f"step {step:,.0f}: {kind.replace('_', ' ')}"
    return None


def watch(
    record: Record, device: Proc, daemon: Proc, total: int, metric: str, extra: Callable[[], list[str]] = list
) -> None:
    """Until the device has run its steps: the latest sample on a progress bar, the gate's events as lines."""
    progress = Progress(total)
    try:
        while True:
            done = device.popen.poll() is not None
            _, events = record.poll()
            for line in extra():
                progress.write(line)
            for event in events:
                text = describe_event(event, record.steps_at(event["mono"]))
                if text:
                    progress.write(text + " (telemetry)")
            if daemon.popen.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.popen.returncode}: see {relative(str(daemon.log))}")
            if record.samples:
                s = record.samples[-1]
                status = (
                    f"{metric.replace('_', ' ')} {fmt(s.get(metric), 2)}  promotions {s.get('promotions', 0)}  "
                    f"rollbacks {s.get('rollbacks', 0)}  safe actions {s.get('safe_actions', 0)}  "
                    f"{s.get('rate_hz') or 0:,.0f} steps/s"
                )
                progress.update(int(s["steps"]), status)
            if done:
                return
            time.sleep(0.25)
    finally:
        progress.close()


def python_device_story(s: Scenario, doc: str, argv: list[str] | None = None) -> int:
    """The drone's and the robot's story: as the radio's, with `edge-rl device ENV --shift` on a pty for the device."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of training, distillation, the learner and the device")
    p.add_argument(
        "--out", type=Path, default=ROOT / "runs" / s.name, help=f"output directory (default: runs/{s.name})"
    )
    p.add_argument("--train-steps", type=int, default=s.train_steps, help=f"teacher's DQN steps ({s.train_steps})")
    p.add_argument("--adapt", choices=("off", "head", "full"), default="full", help="daemon adaptation (default: full)")
    p.add_argument("--steps", type=int, default=40_000, help="device steps (default: 40000)")
    p.add_argument("--switch-at", type=int, default=10_000, help="step of the shift (default: 10000)")
    args = p.parse_args(argv)
    if not 5000 <= args.switch_at <= args.steps - 7000:
        p.error("need 5000 <= --switch-at <= --steps - 7000")
    s = replace(s, train_steps=args.train_steps)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    device_id = f"{s.name}-1"
    steps = Steps(6)
    print(f"edge-rl example: the {s.name} ({s.env}) end to end, seed {args.seed}, into {relative(str(out))}")
    bundle, public_key = train_and_compress(s, out, args.seed, steps)
    live_dir = out / "live"
    shutil.rmtree(live_dir, ignore_errors=True)
    live_dir.mkdir(parents=True)
    state, record_path, stats = live_dir / "state", live_dir / "telemetry.jsonl", live_dir / "device-stats.jsonl"
    config = live_dir / "daemon.toml"
    config.write_text(f"[adapt]\nseed = {args.seed}\n")
    with Live(live_dir) as live:
        with steps.step("start the embedded MQTT broker and the fleet monitor"):
            url = start_broker(live)
            monitor = start_monitor(live, url, device_id, record_path, live_dir / "monitor.png")
        with steps.step(
            f"run the daemon (--adapt {args.adapt}) against `edge-rl device` on a pty: {describe_shift(s)}"
        ):
            relay = PtyRelay()
            try:
                daemon_args = [
                    "--adapt", args.adapt, "--public-key", public_key, "--config", config,
                    "--telemetry", url, "--device-id", device_id,
                ]  # fmt: skip
                daemon = start_daemon(live, bundle, serial_url(relay.a), daemon_args, state)
                device_args = [
                    "device", s.env, "--link", serial_url(relay.b), "--env-kwargs", json.dumps(s.kwargs),
                    "--shift", f"{args.switch_at}:{json.dumps(s.shift)}", "--steps", args.steps,
                    "--seed", args.seed, "--stats", stats, "--window", 1000, "--device-id", s.name,
                ]  # fmt: skip
                say("$ edge-rl " + shlex.join(relative(str(a)) for a in device_args))
                device = live.start("device", [*EDGE_RL, *device_args])
                record = Record(record_path, device_id)
                watch(record, device, daemon, args.steps, s.metric)
                say(f"the device ran its {args.steps:,} steps (exit {device.popen.returncode})")
                time.sleep(1.5)  # the daemon's next sample covers the last steps
                say(f"daemon stopped (exit {live.stop(daemon)})")
                time.sleep(0.5)
                say(f"monitor stopped (exit {live.stop(monitor)})")
            finally:
                relay.close()
            record.poll()
    with steps.step("summary and plot"):
        device_summary(s, args, record, stats, out)
    print(f"\nall done in {steps.elapsed():.0f} s")
    return 0


def device_summary(s: Scenario, args: argparse.Namespace, record: Record, stats: Path, out: Path) -> dict[str, Any]:
    """Windows before / right after / last 5,000 steps: telemetry's metric, the device's true figures; the PNG."""
    from edge_rl.table import print_table

    truth = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    end = float(record.samples[-1]["steps"]) if record.samples else float(args.steps)
    switch = float(args.switch_at)  # lock step: the daemon answers every device step but the terminal ones
    windows = {
        "before": (switch - 5000, switch),
        "right after": (switch, switch + 2000),
        "after recovery": (end - 5000, end),
    }
    ends, counts, values = record.curve(s.metric)
    telemetry = {k: window_mean(ends, counts, values, lo, hi) for k, (lo, hi) in windows.items()}

    def device_mean(key: str, lo: float, hi: float) -> float:
        inside = [w[key] for w in truth if w.get(key) is not None and lo < w["step"] <= hi + 1]
        return float(np.mean(inside)) if inside else float("nan")

    slots = {
        "before": (switch - 5000, switch),
        "right after": (switch, switch + 2000),
        "after recovery": (args.steps - 5000, args.steps),
    }
    print(f"\n== summary: {args.steps:,} steps, {describe_shift(s)} at step {args.switch_at:,}")
    print_table(
        ["", "before the shift", "right after it", "last 5,000 steps"],
        [
            ["daemon steps", *(f"{lo:,.0f}-{hi:,.0f}" for lo, hi in windows.values())],
            [f"{s.metric_label}, telemetry", *(fmt(telemetry[k]) for k in windows)],
            ["mean reward per step, device (true)", *(fmt(device_mean("mean_reward", *slots[k])) for k in windows)],
            ["success rate, device (true)", *(fmt(device_mean("success_rate", *slots[k])) for k in windows)],
        ],
    )
    counters = {k: int(record.last(k)) for k in ("promotions", "rollbacks", "drift_alarms", "safe_actions")}
    print_table(list(counters), [list(counters.values())])
    png = out / f"{s.name}.png"
    plot(
        png,
        f"{s.env}: {describe_shift(s)} at step {args.switch_at:,}; int8 student, --adapt {args.adapt}, "
        f"seed {args.seed}",
        record,
        switch,
        windows,
        None,
        None,
        "",
        s.metric,
        s.metric_label,
    )
    result = {"telemetry": telemetry, "windows": windows, **counters}
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {relative(str(png))} and {relative(str(out / 'summary.json'))}")
    return result
