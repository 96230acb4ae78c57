"""`edge-rl run` (the daemon) against simulated devices, every run as real processes over a socat pty pair.

Part A - the control loop's cost. The daemon (pinned to one core with taskset when it exists) runs
--steps answered OBS with --adapt off, head and full against a periodic device (--period-ms,
default 1 ms) on the other core:
- `c`: the C AntiJam device simulator (firmware_bridge/firmware/sim, built with `make sim`) with the
  student's bundle, `--history` set to the bundle's 4 scans (a simulator without that option sends
  8 scans, 72 floats, which the daemon refuses: exit 8; then a bundle of the student's architecture
  is trained here once on AntiJam with history 8 and used instead);
- `python`: `edge-rl device edge_rl/AntiJam-v0 --period-ms ...` with the student's own bundle.
Per run: OBS -> ACTION latency p50/p99 as the daemon reports it (`--json`: the last 4,096 steps),
steps/s (answered OBS between the handshake event and the "stopped" event), peak RSS (ru_maxrss of
the daemon from os.wait4: the whole life, start-up included), CPU seconds per 1,000 steps (utime +
stime from wait4 minus /proc/<pid>/stat at the handshake: the loop only) and the start-up CPU.

Part B - adaptation through the serial link: `edge-rl device ENV --shift ... --stats FILE --window
1000` in lock step (the default) against `edge-rl run BUNDLE --adapt off|head|full --config (seed)`,
a fresh pair of processes per run; the daemon gets SIGTERM once the device has run its steps.
- antijam: bundles/antijam-sweeping-int8, jammer sweeping -> reactive at --switch (default 5,000);
  the device's true success rate per 1,000-step window; steps until the curve stays >= 90 % of
  best_success_rate (1.0) as benchmarks/adaptation.py's summarize(), the last 5k, frozen's level.
- hover: bundles/hover-int8 (exported from students/hover-int8 if missing), battery_sag 0 -> 0.3 at
  --switch; the true mean reward per step over the run, adapted / frozen.
- poison: antijam with the reported reward sign-flipped for --poison-len steps from --poison (the
  device's --stats keep the true reward); head and full only (frozen does not learn: its antijam run
  is the same policy on the same device seeds). The daemon's rollback / drift_alarm /
  reward_suspect / reward_trusted events, whether each rollback restored the last-good digest,
  and the true success before vs after the poison; for contrast, the same stream Q(lambda)
  learner with no gate (acting itself, learning from every reported reward, in this process).
References run in this process on the same simulated device (EnvDevice, same seeds and shifts):
the bundle's policy acting greedily, what `--adapt off` must match (before c710235 it explored 5 %).
Event steps: gate events carry the gate's step (transitions it saw; drift_alarm and rollback as
learning_frozen_until_step - cooldown_steps), mapped to env steps by the run's ratio of answered
OBS to transitions; events without a step (reward_suspect, reward_trusted) are interpolated on
their monotonic time between the moments the device's 1,000-step stats windows appeared.

    python benchmarks/daemon.py                              # ~7 min on 2 cores
    python benchmarks/daemon.py --parts a --steps 2000       # the control loop only
    python benchmarks/daemon.py --parts b --adapt-steps 30000 --seeds 0 --poison 20000

Prints a table per part; writes benchmarks/results/daemon.json and daemon.png; run directories
(logs, events.jsonl, --stats files) stay in benchmarks/results/daemon/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tests.ptys import SocatPair

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "daemon"
FIRMWARE = ROOT / "firmware_bridge" / "firmware"
C_SIM = FIRMWARE / "build" / "antijam_device"
EDGE_RL = [sys.executable, "-m", "edge_rl.cli"]
BAUD = 115200
ANTIJAM_BUNDLE = RESULTS / "bundles" / "antijam-sweeping-int8"
CSIM_BUNDLE = RESULTS / "bundles" / "antijam-sweeping-h8-int8"  # the C simulator's 72-float observation
HOVER_BUNDLE = RESULTS / "bundles" / "hover-int8"
HOVER_STUDENT = RESULTS / "students" / "hover-int8"
MODES = ("off", "head", "full")
MODES_SHOWN = ("policy", "off", "head", "full", "head, no gate", "full, no gate")  # with the in-process references
LABEL = {
    "policy": "frozen policy, no exploration (in process)",
    "off": "frozen (--adapt off)",
    "head": "head",
    "full": "full",
    "head, no gate": "head, no gate (in process)",
    "full, no gate": "full, no gate (in process)",
}
COLOR = {
    "policy": "black",
    "off": "tab:grey",
    "head": "tab:blue",
    "full": "tab:orange",
    "head, no gate": "tab:purple",
    "full, no gate": "tab:red",
}
WINDOW = 1000
GATE_EVENTS = ("candidate_promoted", "rollback", "drift_alarm", "reward_suspect", "reward_trusted", "fallback")


# -- processes -----------------------------------------------------------------------------------------
def pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def cores() -> tuple[int | None, int | None]:
    """(daemon's core, the device's and socat's core); None where taskset or a second core is missing."""
    if shutil.which("taskset") is None:
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return available[0], None
    return available[-1], available[0]


def pty_pair(directory: Path, core: int | None = None) -> SocatPair:
    """Two linked ptys (tests/ptys.py); socat pinned to `core` when given."""
    from tests.ptys import SocatPair

    pair = SocatPair(directory)
    if core is not None and pair._process is not None:
        os.sched_setaffinity(pair._process.pid, {core})
    return pair


def url(path: Path) -> str:
    return f"serial://{path}?baud={BAUD}"


def events_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def wait_for_event(
    path: Path, proc: subprocess.Popen, match: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for record in events_of(path):
            if match(record):
                return record
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} before {path.name} showed the event")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no such event in {path} within {timeout:.0f} s")
        time.sleep(0.01)


def handshake(record: dict[str, Any]) -> bool:
    return record.get("kind") == "link" and "speaks" in str(record.get("detail", ""))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen | None, timeout: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit code (negative: killed by a signal)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def table_values(text: str) -> dict[str, str]:
    """`name  value` rows of a print_table output."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\S.*?)\s{2,}(\S+)$", line)
        if m and not set(line) <= {"-", " "}:
            out[m.group(1).strip()] = m.group(2)
    return out


def fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def write_config(directory: Path, seed: int) -> Path:
    path = directory / "config.toml"
    path.write_text(f"[adapt]\nseed = {seed}\n")
    return path


# -- bundles -------------------------------------------------------------------------------------------
def run_cli(*args: str) -> None:
    subprocess.run([*EDGE_RL, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def hover_bundle() -> Path:
    if not (HOVER_BUNDLE / "manifest.json").exists():
        if not (HOVER_STUDENT / "policy.json").exists():
            raise SystemExit(f"{HOVER_STUDENT} is missing: run `python benchmarks/compression.py` first")
        print(f"exporting {HOVER_BUNDLE.relative_to(ROOT)}", file=sys.stderr, flush=True)
        run_cli("export", str(HOVER_STUDENT), "--out", str(HOVER_BUNDLE))
    return HOVER_BUNDLE


def antijam_bundle() -> Path:
    if not (ANTIJAM_BUNDLE / "manifest.json").exists():
        raise SystemExit(f"{ANTIJAM_BUNDLE} is missing: run `python benchmarks/compression.py` first")
    return ANTIJAM_BUNDLE


def csim_setup() -> tuple[Path, list[str]]:
    """The bundle the C simulator runs and the options that make it send that bundle's observation.

    A simulator with `--history` (AntiJam's scans, 1-8) runs the student's bundle; an older one sends
    8 scans (72 floats) where the student expects 4 (40), and runs a bundle of the student's
    architecture trained here once on AntiJam with history 8 (20k DQN steps, int8; cached).
    """
    usage = subprocess.run([str(C_SIM), "--help"], capture_output=True, text=True, check=True).stdout
    if "--history" in usage:
        from edge_rl.policy import Policy

        size = Policy.load(antijam_bundle()).observation.size
        return ANTIJAM_BUNDLE, ["--history", str(size // 8 - 1)]
    if (CSIM_BUNDLE / "manifest.json").exists():
        return CSIM_BUNDLE, []
    from safetensors.numpy import load_file

    weights = load_file(str(antijam_bundle() / "policy.safetensors"))
    hidden = ",".join(str(weights[f"layers.{i}.weight"].shape[0]) for i in (1, 2))
    work = fresh(WORK / "csim-policy")
    print(f"the C simulator sends 72 floats: training its policy (history 8, hidden {hidden})", file=sys.stderr)
    kwargs = json.dumps({"jammer": "sweeping", "history": 8})
    fp32, int8 = work / "fp32", work / "int8"
    train = ["train", "edge_rl/AntiJam-v0", "--env-kwargs", kwargs, "--hidden", hidden, "--dueling"]
    run_cli(*train, "--steps", "20000", "--quiet", "--out", str(fp32))
    run_cli("quantize", str(fp32), "--to", "int8", "--out", str(int8))
    run_cli("export", str(int8), "--out", str(CSIM_BUNDLE))
    return CSIM_BUNDLE, []


# -- Part A: the control loop's cost -------------------------------------------------------------------
def sim_log(path: Path) -> tuple[list[tuple[float, str]], dict[str, str]]:
    """The C simulator's slots (monotonic time, reason) and its exit counters."""
    slots, exit_line = [], {}
    for line in path.read_text().splitlines() if path.exists() else []:
        m = re.match(r"t=(\S+) slot=\d+ action=\d+ reason=(\S+)", line)
        if m:
            slots.append((float(m.group(1)), m.group(2)))
        elif " exit " in line:
            exit_line = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
    return slots, exit_line


def control_run(device: str, mode: str, steps: int, period_ms: int, directory: Path) -> dict[str, Any]:
    """One daemon against one periodic device for `steps` answered OBS; the daemon's cost."""
    core_daemon, core_device = cores()
    directory = fresh(directory)
    state = directory / "state"
    bundle, sim_options = csim_setup() if device == "c" else (antijam_bundle(), [])
    pair = pty_pair(directory, core_device)
    daemon = peer = None
    try:
        with open(directory / "daemon.json", "w") as out, open(directory / "daemon.err", "w") as err:
            daemon = subprocess.Popen(
                [
                    *pinned(core_daemon),
                    *EDGE_RL,
                    "run",
                    str(bundle),
                    "--link",
                    url(pair.a),
                    "--adapt",
                    mode,
                    "--state-dir",
                    str(state),
                    "--config",
                    str(write_config(directory, 0)),
                    "--steps",
                    str(steps),
                    "--json",
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        events = state / "events.jsonl"
        wait_for_event(events, daemon, lambda r: r.get("kind") == "verified", 120)
        if device == "c":
            cmd = [str(C_SIM), *sim_options, "--period-ms", str(period_ms), "--seed", "0"]
            cmd += ["--log", str(directory / "sim.log"), str(pair.b)]
        else:
            cmd = [
                *EDGE_RL,
                "device",
                "edge_rl/AntiJam-v0",
                "--link",
                url(pair.b),
                "--env-kwargs",
                json.dumps({"jammer": "sweeping"}),
                "--period-ms",
                str(period_ms),
                "--seed",
                "0",
            ]
        with open(directory / "device.out", "w") as out, open(directory / "device.err", "w") as err:
            peer = subprocess.Popen([*pinned(core_device), *cmd], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        # the loop's CPU starts at the handshake (verification, imports and start-up are before it)
        cpu_at_handshake, deadline = None, time.monotonic() + 120 + steps / 100
        while True:
            pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
            if pid:
                daemon.returncode = os.waitstatus_to_exitcode(status)
                break
            if cpu_at_handshake is None and any(handshake(r) for r in events_of(events)):
                cpu_at_handshake = cpu_seconds(daemon.pid)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not answer {steps} OBS in time ({directory})")
            time.sleep(0.005)
        device_rc = stop(peer, 10)
    finally:
        stop(daemon)
        stop(peer)
        pair.close()
    summary = json.loads((directory / "daemon.json").read_text() or "{}")
    records = events_of(events)
    t0 = next((r["mono"] for r in records if handshake(r)), math.nan)
    t1 = next((r["mono"] for r in records if r["kind"] == "stopped"), math.nan)
    cpu_total = usage.ru_utime + usage.ru_stime
    loop_cpu = cpu_total - cpu_at_handshake if cpu_at_handshake is not None else math.nan
    row = {
        "device": device,
        "mode": mode,
        "bundle": str(bundle.relative_to(ROOT)),
        "period_ms": period_ms,
        "daemon_core": core_daemon,
        "device_core": core_device,
        "daemon_rc": daemon.returncode,
        "device_rc": device_rc,
        "steps": summary.get("steps"),
        "latency_p50_us": summary.get("latency_p50_us"),
        "latency_p99_us": summary.get("latency_p99_us"),
        "steps_per_s": summary.get("steps", 0) / (t1 - t0) if t1 > t0 else math.nan,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s_per_1k_steps": 1000 * loop_cpu / max(summary.get("steps", 0), 1),
        "cpu_s_startup": cpu_at_handshake,
        "cpu_s_total": cpu_total,
        "safe_actions": summary.get("safe_actions"),
        "fallbacks": summary.get("fallbacks"),
        "late": summary.get("late"),
        "gaps": summary.get("gaps"),
        "transitions": summary.get("transitions"),
        "gate": summary.get("gate"),
        "link": summary.get("link"),
    }
    if device == "c":
        slots, exit_counters = sim_log(directory / "sim.log")
        during = [reason for t, reason in slots if t0 <= t <= t1]
        row["device_slots_during_run"] = len(during)
        row["device_safe_slots_during_run"] = sum(reason != "policy" for reason in during)
        row["device_reasons_during_run"] = {k: during.count(k) for k in sorted(set(during))}
        row["device_exit"] = exit_counters
    else:
        row["device_table"] = table_values((directory / "device.out").read_text())
    return row


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    if "c" in args.devices:
        antijam_bundle()
        if shutil.which("cc") is None:
            raise SystemExit("no C compiler: run .ci/system-deps")
        subprocess.run(["make", "-s", "-C", str(FIRMWARE), "sim"], check=True)
    rows = []
    for device in args.devices:
        for mode in MODES:
            t = time.monotonic()
            row = control_run(device, mode, args.steps, args.period_ms, WORK / "control" / f"{device}-{mode}")
            rows.append(row)
            print(
                f"part A: {device} device, --adapt {mode}: {time.monotonic() - t:.1f} s, daemon exit "
                f"{row['daemon_rc']}, device exit {row['device_rc']}",
                file=sys.stderr,
                flush=True,
            )
    return {"rows": rows, "link": link_reference()}


def link_reference() -> dict[str, Any] | None:
    """The link alone, from benchmarks/results/link.json when it exists (not rerun here)."""
    path = RESULTS / "link.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    rows = {
        f"{cpu}: {row['label']}": {k: row[k] for k in ("p50_us", "p99_us", "per_s")}
        for cpu, by_key in data["rows"].items()
        for key, row in by_key.items()
        if key.startswith("edge-rl") or key == "raw-echo"
    }
    return {"trips": data.get("trips"), "repeats": data.get("repeats"), "rows": rows}


def print_part_a(result: dict[str, Any]) -> None:
    from edge_rl.table import print_table

    rows = result["rows"]
    if not rows:
        return
    r0 = rows[0]
    where = f"daemon on core {r0['daemon_core']}, device and socat on core {r0['device_core']}"
    print(f"\nPart A: the control loop, periodic device every {r0['period_ms']} ms ({where})")
    print_table(
        [
            "device",
            "bundle",
            "adapt",
            "steps",
            "p50 us",
            "p99 us",
            "steps/s",
            "peak RSS MB",
            "CPU s/1k steps",
            "start-up CPU s",
            "daemon safe",
            "late",
            "gaps",
            "device safe",
            "exits",
        ],
        [
            [
                "C sim" if r["device"] == "c" else "Python",
                Path(r["bundle"]).name,
                r["mode"],
                r["steps"],
                r["latency_p50_us"],
                r["latency_p99_us"],
                r["steps_per_s"],
                r["peak_rss_mb"],
                r["cpu_s_per_1k_steps"],
                r["cpu_s_startup"],
                r["safe_actions"],
                r["late"],
                r["gaps"],
                r.get("device_safe_slots_during_run", r.get("device_table", {}).get("safe-action steps", "?")),
                f"{r['daemon_rc']}/{r['device_rc']}",
            ]
            for r in rows
        ],
    )
    print(
        "steps/s is capped by the device's period; CPU s/1k steps counts the daemon from the handshake to its "
        "exit; peak RSS is the daemon's whole life; device safe: C sim slots with another reason than `policy` "
        "between the handshake and the daemon's stop, Python device: safe-action steps over its whole run "
        "(before the handshake and after the daemon stopped included); exits: daemon/device."
    )
    link = result.get("link")
    if link:
        print(
            f"the link alone (benchmarks/results/link.json, {link['trips']} round trips x {link['repeats']}, "
            "not rerun):"
        )
        for label, v in link["rows"].items():
            print(f"  {label}: p50 {v['p50_us']:.0f} us, p99 {v['p99_us']:.0f} us, {v['per_s']:,.0f} round trips/s")


# -- Part B: adaptation through the serial link ------------------------------------------------------------
SCENARIOS: dict[str, dict[str, Any]] = {
    "antijam": {
        "env": "edge_rl/AntiJam-v0",
        "kwargs": {"jammer": "sweeping"},
        "shift": {"jammer": "reactive"},
        "bundle": ANTIJAM_BUNDLE,
        "metric": "success_rate",
        "modes": MODES,
    },
    "hover": {
        "env": "edge_rl/Hover-v0",
        "kwargs": None,
        "shift": {"battery_sag": 0.3},
        "bundle": HOVER_BUNDLE,
        "metric": "mean_reward",
        "modes": MODES,
    },
    "poison": {
        "env": "edge_rl/AntiJam-v0",
        "kwargs": {"jammer": "sweeping"},
        "shift": {"jammer": "reactive"},
        "bundle": ANTIJAM_BUNDLE,
        "metric": "success_rate",
        "modes": ("head", "full"),
    },
}


def device_shifts(scenario: str, args: argparse.Namespace) -> list[str]:
    shifts = [f"{args.switch}:{json.dumps(SCENARIOS[scenario]['shift'])}"]
    if scenario == "poison":
        shifts += [f'{args.poison}:{{"reward_scale": -1}}', f'{args.poison + args.poison_len}:{{"reward_scale": 1}}']
    return shifts


def adaptation_run(
    scenario: str, mode: str, seed: int, steps: int, shifts: list[str], directory: Path
) -> dict[str, Any]:
    """A fresh daemon and device; the device's ground truth per window, the daemon's events and summary."""
    spec = SCENARIOS[scenario]
    record: dict[str, Any] = {"scenario": scenario, "mode": mode, "seed": seed, "steps": steps, "shifts": shifts}
    started = time.monotonic()
    directory = fresh(directory)
    state, stats = directory / "state", directory / "stats.jsonl"
    events = state / "events.jsonl"
    pair = pty_pair(directory)
    daemon = device = None
    usage = None
    clocks: list[tuple[float, int]] = []  # (monotonic time, env step) as the device's windows closed
    try:
        with open(directory / "daemon.json", "w") as out, open(directory / "daemon.err", "w") as err:
            daemon = subprocess.Popen(
                [
                    *EDGE_RL,
                    "run",
                    str(spec["bundle"]),
                    "--link",
                    url(pair.a),
                    "--adapt",
                    mode,
                    "--state-dir",
                    str(state),
                    "--config",
                    str(write_config(directory, seed)),
                    "--json",
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        wait_for_event(events, daemon, lambda r: r.get("kind") == "verified", 180)
        cmd = [*EDGE_RL, "device", spec["env"], "--link", url(pair.b)]
        if spec["kwargs"]:
            cmd += ["--env-kwargs", json.dumps(spec["kwargs"])]
        for shift in shifts:
            cmd += ["--shift", shift]
        cmd += ["--stats", str(stats), "--window", str(WINDOW), "--steps", str(steps), "--seed", str(seed)]
        with open(directory / "device.out", "w") as out, open(directory / "device.err", "w") as err:
            device = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 300 + steps / 20  # 20 steps/s would be a broken pair
        windows_seen = 0
        while device.poll() is None:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode} while the device ran")
            if time.monotonic() > deadline:
                raise RuntimeError("the device did not finish its steps in time")
            time.sleep(0.01)
            # when each window's line appears (the device flushes it at once): env steps against the daemon's clock
            now = time.monotonic()
            lines = stats.read_text().splitlines() if stats.exists() else []
            for line in lines[windows_seen:]:
                try:
                    clocks.append((now - 0.005, int(json.loads(line)["step"])))
                except (ValueError, KeyError):
                    break
                windows_seen += 1
        record["device_rc"] = device.returncode
        record["device_s"] = time.monotonic() - started
        daemon.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while True:
            pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
            if pid:
                daemon.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not exit within 60 s of SIGTERM")
            time.sleep(0.02)
        record["daemon_rc"] = daemon.returncode
    except Exception as exc:  # the record says what failed; the logs stay in `directory`
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        record.setdefault("daemon_rc", stop(daemon))
        record.setdefault("device_rc", stop(device))
        pair.close()
    record["wall_s"] = time.monotonic() - started
    record["dir"] = str(directory.relative_to(ROOT))
    record["windows"] = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    text = (directory / "daemon.json").read_text()
    summary = json.loads(text) if text.strip() else {}
    record["summary"] = {k: v for k, v in summary.items() if k != "link"}
    record["link"] = summary.get("link", {})
    record["device_table"] = table_values((directory / "device.out").read_text())
    if usage is not None:
        record["cpu_s"] = usage.ru_utime + usage.ru_stime
        record["peak_rss_mb"] = usage.ru_maxrss / 1024
    record["events"] = step_events(events_of(events), summary, clocks)
    record["bundle_digest"] = bundle_digest(spec["bundle"])
    record["alarm_checks"] = alarm_checks(record["events"], record["bundle_digest"])
    return record


def bundle_digest(bundle: Path) -> str:
    from edge_rl.policy import Policy

    return Policy.load(bundle).digest()[:16]


def step_events(
    records: list[dict[str, Any]], summary: dict[str, Any], clocks: list[tuple[float, int]]
) -> list[dict[str, Any]]:
    """The gate's events with an env step each: mapped from the gate's step, or interpolated on time.

    The gate counts the transitions it saw; the env steps are the OBS the daemon answered, so a gate
    step maps to env steps by the run's ratio of the two. An event without a step is placed by its
    monotonic time between `clocks`: the times at which the device's stats windows appeared (every
    1,000 env steps, seen within ~10 ms).
    """
    from edge_rl.daemon.config import AdaptConfig

    cooldown = AdaptConfig().cooldown_steps
    steps, transitions = summary.get("steps", 0), summary.get("transitions", 0)
    ratio = steps / transitions if transitions else 1.0
    t0 = next((r["mono"] for r in records if handshake(r)), None)
    keep = (*GATE_EVENTS, "confirmed", "recovered", "safe_action", "fallback_ended", "learning_resumed")
    out, frozen_until = [], None
    for r in records:
        if r["kind"] not in keep:
            continue
        e = {k: v for k, v in r.items() if k not in ("boot", "wall", "seq")}
        e["t"] = r["mono"] - t0 if t0 is not None else None
        gate_step = None
        if r["kind"].startswith("candidate_") and "step" in r:
            gate_step = r["step"]
        elif r["kind"] in ("rollback", "drift_alarm") and "learning_frozen_until_step" in r:
            frozen_until = r["learning_frozen_until_step"]
            gate_step = frozen_until - cooldown
        elif r["kind"] == "learning_resumed" and frozen_until is not None:
            gate_step, frozen_until = frozen_until, None  # the cooldown ends on the step it was set to end
        if gate_step is not None:
            e["gate_step"], e["env_step"], e["step_from"] = gate_step, round(gate_step * ratio), "gate step"
        elif r["kind"] == "safe_action" and "step" in r:
            e["env_step"], e["step_from"] = r["step"], "loop step"
        elif t0 is not None and len(clocks) >= 2:
            ts, ss = zip(*([(t0, 0), *clocks]), strict=True)
            e["env_step"], e["step_from"] = round(float(np.interp(r["mono"], ts, ss))), "interpolated on time"
        out.append(e)
    return out


def alarm_checks(events: list[dict[str, Any]], bundle: str) -> list[dict[str, Any]]:
    """Each rollback and drift alarm: the incumbent acting after it vs the last-good digest the events name.

    Last-good is the bundle's policy until a `confirmed` event names another (a promoted policy that
    kept its level through probation); a rollback must restore it, a drift alarm keeps it acting.
    """
    last_good, out = bundle, []
    for e in events:
        if e["kind"] == "confirmed":
            last_good = e["digest"]
        elif e["kind"] == "fallback":
            last_good = bundle
        elif e["kind"] in ("rollback", "drift_alarm"):
            out.append(
                {
                    "kind": e["kind"],
                    "env_step": e.get("env_step"),
                    "incumbent": e.get("incumbent"),
                    "last_good": last_good,
                    "equal": e.get("incumbent") == last_good,
                    "is_bundle": e.get("incumbent") == bundle,
                }
            )
    return out


def in_process_run(scenario: str, mode: str, seed: int, steps: int, shifts: list[str]) -> dict[str, Any]:
    """The same device in this process, no link and no daemon: references for the daemon's runs.

    `policy`: the bundle's policy acting greedily (what `--adapt off` must match); `head` / `full`:
    the daemon's learner (its lr, kappa, lambda) acting itself and learning from every reported
    reward, poisoned ones included: no gate.
    """
    from edge_rl.daemon.config import AdaptConfig
    from edge_rl.envdevice import EnvDevice, Shift
    from edge_rl.policy import Policy
    from edge_rl.stream import from_policy

    started = time.monotonic()
    spec, c = SCENARIOS[scenario], AdaptConfig()
    policy = Policy.load(spec["bundle"])
    learner = None if mode == "policy" else from_policy(policy, mode, seed=seed, lr=c.lr, kappa=c.kappa, lam=c.lam)
    windows: list[dict[str, Any]] = []
    shift = tuple(map(Shift.parse, shifts))
    device = EnvDevice(spec["env"], spec["kwargs"], seed=seed, shifts=shift, window=WINDOW, on_window=windows.append)
    try:
        x = device.reset()[-1].observation
        for _ in range(steps):
            if learner is None:
                out = device.step(policy.act(x))
            else:
                out = device.step(learner.act(x))
                learner.observe(float(out[0].reward), out[0].observation, out[0].terminated, out[0].truncated)
            x = out[-1].observation
    finally:
        device.close()
    label = "policy" if mode == "policy" else f"{mode}, no gate"
    return {"scenario": scenario, "mode": label, "seed": seed, "windows": windows, "wall_s": time.monotonic() - started}


# -- summaries -----------------------------------------------------------------------------------------------
def series(run: dict[str, Any], key: str, n: int) -> np.ndarray:
    """The run's `key` per window, NaN where missing (a failed run's curve is short)."""
    values = [np.nan if w.get(key) is None else float(w[key]) for w in run.get("windows", [])][:n]
    return np.array(values + [np.nan] * (n - len(values)))


def window_mean(axis: np.ndarray, c: np.ndarray, low: float, high: float) -> float:
    """Mean of the windows ending in (low, high]."""
    mask = (axis > low) & (axis <= high)
    return float(np.nanmean(c[mask])) if mask.any() and not np.isnan(c[mask]).all() else math.nan


def recovery(axis: np.ndarray, c: np.ndarray, switch: int, best: float) -> int | None:
    """Steps from the switch to the end of the first window from which the curve stays >= 90 % of best (summarize())."""
    after = axis > switch
    for i, s in enumerate(axis):
        if s > switch and np.all(c[i:][after[i:]] >= 0.9 * best):
            return int(s) - switch
    return None


def mode_curves(runs: list[dict[str, Any]], scenario: str, key: str, n: int) -> dict[str, dict[str, Any]]:
    """Per mode (in MODES_SHOWN order): seeds, the curve per seed and their mean."""
    out = {}
    for mode in MODES_SHOWN:
        own = sorted((r for r in runs if r["scenario"] == scenario and r["mode"] == mode), key=lambda r: r["seed"])
        if own:
            matrix = np.array([series(r, key, n) for r in own])
            out[mode] = {"seeds": [r["seed"] for r in own], "per_seed": matrix, "mean": np.nanmean(matrix, 0)}
    return out


def jsonable(curves: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m: {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in c.items()} for m, c in curves.items()}


def summarize_antijam(runs: list[dict[str, Any]], args: argparse.Namespace, axis: np.ndarray) -> dict[str, Any]:
    from edge_rl.gymenv import make_env

    env = make_env("edge_rl/AntiJam-v0", {"jammer": "reactive"})
    best = float(env.unwrapped.best_success_rate)
    env.close()
    curves, rows = mode_curves(runs, "antijam", "success_rate", len(axis)), []
    for mode, c in curves.items():
        for seed, values in [*zip(c["seeds"], c["per_seed"], strict=True), ("mean", c["mean"])]:
            rows.append(
                {
                    "mode": mode,
                    "seed": seed,
                    "before_switch": window_mean(axis, values, 0, args.switch),
                    "after_switch": window_mean(axis, values, args.switch, math.inf),
                    "last_5k": window_mean(axis, values, args.adapt_steps - 5000, math.inf),
                    "steps_to_90pct_of_best": recovery(axis, values, args.switch, best),
                }
            )
    mean = {r["mode"]: r for r in rows if r["seed"] == "mean"}
    verdicts = {}
    for mode in ("head", "full"):
        if mode in mean and "off" in mean:
            steps = mean[mode]["steps_to_90pct_of_best"]
            verdicts[mode] = {
                "recovered_within_30k": steps is not None and steps <= 30_000,
                "points_above_frozen": {
                    ref: 100 * (mean[mode]["last_5k"] - mean[ref]["after_switch"])
                    for ref in ("off", "policy")
                    if ref in mean
                },
            }
    return {"best_success_rate": best, "rows": rows, "curves": jsonable(curves), "verdicts": verdicts}


def summarize_hover(runs: list[dict[str, Any]], args: argparse.Namespace, axis: np.ndarray) -> dict[str, Any]:
    curves = mode_curves(runs, "hover", "mean_reward", len(axis))
    whole = {
        m: dict(zip(map(str, c["seeds"]), map(float, np.nanmean(c["per_seed"], 1)), strict=True))
        for m, c in curves.items()
    }
    for values in whole.values():
        values["mean"] = float(np.mean(list(values.values())))
    rows = []
    for seed in whole.get("off", {}):
        row: dict[str, Any] = {"seed": seed, **{m: whole[m].get(seed, math.nan) for m in whole}}
        for mode in ("head", "full"):
            for ref in ("off", "policy"):
                if mode in row and ref in row:
                    row[f"{mode}/{ref}"] = row[mode] / row[ref] if row[ref] else math.nan
        rows.append(row)
    return {"rows": rows, "curves": jsonable(curves)}


def summarize_poison(runs: list[dict[str, Any]], args: argparse.Namespace, axis: np.ndarray) -> dict[str, Any]:
    start, end = args.poison, args.poison + args.poison_len
    spans = {
        "pre": (max(start - 5000, args.switch), start),
        "during": (start, end),
        "post": (end, min(end + 8000, args.adapt_steps)),
    }
    curves, rows = mode_curves(runs, "poison", "success_rate", len(axis)), []
    clean = mode_curves(runs, "antijam", "success_rate", len(axis))
    by_key = {(r["mode"], r["seed"]): r for r in runs if r["scenario"] == "poison"}
    for mode, c in curves.items():
        for seed, values in zip(c["seeds"], c["per_seed"], strict=True):
            run = by_key[(mode, seed)]
            events = run.get("events", [])
            at = {k: [e.get("env_step") for e in events if e["kind"] == k] for k in GATE_EVENTS}
            checks = run.get("alarm_checks", [])
            row: dict[str, Any] = {
                "mode": mode,
                "seed": seed,
                **at,
                "promoted_poison_to_3k_after": [s for s in at["candidate_promoted"] if s and start <= s <= end + 3000],
                "after_alarm_incumbent_is_last_good": [check["equal"] for check in checks],
                "after_alarm_incumbent_is_bundle": [check["is_bundle"] for check in checks],
            }
            for name, (low, high) in spans.items():
                row[name] = window_mean(axis, values, low, high)
                if mode in clean and seed in clean[mode]["seeds"]:
                    no_poison = clean[mode]["per_seed"][clean[mode]["seeds"].index(seed)]
                    row[f"{name}_no_poison"] = window_mean(axis, no_poison, low, high)
            rows.append(row)
    return {"spans": spans, "rows": rows, "curves": jsonable(curves)}


# -- output --------------------------------------------------------------------------------------------------
def ksteps(values: list[int | None]) -> str:
    return " ".join("?" if v is None else f"{v / 1000:.1f}k" for v in values) or "-"


def yes_no(values: list[bool]) -> str:
    return " ".join("yes" if v else "NO" for v in values) or "-"


def print_part_b(summary: dict[str, Any], runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from edge_rl.table import print_table

    if "antijam" in summary:
        s = summary["antijam"]
        print(
            f"\nPart B1: AntiJam-v0, jammer sweeping -> reactive at step {args.switch:,}: the device's true success "
            f"rate per 1,000-step window (best after the switch: {s['best_success_rate']:.2f})"
        )
        print_table(
            ["adapt", "seed", "before switch", "after switch", "last 5k", "steps to 90% of best"],
            [
                [
                    LABEL[r["mode"]],
                    r["seed"],
                    r["before_switch"],
                    r["after_switch"],
                    r["last_5k"],
                    "never" if r["steps_to_90pct_of_best"] is None else r["steps_to_90pct_of_best"],
                ]
                for r in s["rows"]
            ],
        )
        for mode, v in s["verdicts"].items():
            above = ", ".join(f"{p:.0f} points above {LABEL[ref]}" for ref, p in v["points_above_frozen"].items())
            print(
                f"  {mode}: the mean curve {'recovers' if v['recovered_within_30k'] else 'does NOT recover'} to "
                f">= 90 % of best within 30k steps of the switch; its last 5k is {above} after the switch "
                "(requirement: >= 30)"
            )
    if "hover" in summary:
        s = summary["hover"]
        print(
            f"\nPart B2: Hover-v0, battery_sag 0 -> 0.3 at step {args.switch:,}: the device's true mean reward per "
            f"step over the {args.adapt_steps:,}-step run"
        )
        modes = [m for m in MODES_SHOWN if s["rows"] and m in s["rows"][0]]
        ratios = [
            f"{m}/{ref}"
            for m in ("head", "full")
            for ref in ("off", "policy")
            if s["rows"] and f"{m}/{ref}" in s["rows"][0]
        ]
        print_table(
            ["seed", *(LABEL[m] for m in modes), *ratios],
            [[r["seed"], *(r[m] for m in modes), *(r[k] for k in ratios)] for r in s["rows"]],
        )
        mean = next((r for r in s["rows"] if r["seed"] == "mean"), None)
        for key in ratios if mean else []:
            ok = "meets" if mean[key] >= 0.98 else "MISSES"
            print(f"  {key}: {100 * mean[key]:.1f} % ({ok} >= 98 %)")
    if "poison" in summary:
        s = summary["poison"]
        (a, b), (c, d) = s["spans"]["pre"], s["spans"]["post"]
        print(
            f"\nPart B3: AntiJam as B1, reported reward x -1 for steps "
            f"{args.poison:,}-{args.poison + args.poison_len:,} "
            f"(the device's stats keep the true one). Events at env steps (mapped from the gate's step, or "
            f"interpolated on time between the device's stats windows); true success "
            f"{a / 1000:g}k-{b / 1000:g}k (pre), during, "
            f"{c / 1000:g}k-{d / 1000:g}k (post); 'no poison': the same mode and seed in B1; 'no gate': in process"
        )
        rows = []
        for r in s["rows"]:
            rows.append(
                [
                    r["mode"],
                    r["seed"],
                    ksteps(r.get("reward_suspect", [])),
                    ksteps(r.get("reward_trusted", [])),
                    ksteps(r.get("rollback", [])),
                    ksteps(r.get("drift_alarm", [])),
                    yes_no(r.get("after_alarm_incumbent_is_last_good", [])),
                    ksteps(r.get("promoted_poison_to_3k_after", [])),
                    r["pre"],
                    r["during"],
                    r["post"],
                    r.get("pre_no_poison", ""),
                    r.get("post_no_poison", ""),
                ]
            )
        header = ["adapt", "seed", "suspect at", "trusted at", "rollback at", "drift alarm at", "then last-good acts"]
        header += ["promoted poison..+3k", "pre", "during", "post", "pre no poison", "post no poison"]
        print_table(header, rows)
        print(
            "  then last-good acts: after each rollback and drift alarm in order, whether the incumbent the event "
            "names is the last-good digest (the bundle's until a `confirmed` event names another)"
        )
    print(
        "\nPart B: every daemon run (exits: daemon/device; daemon safe: its safe actions and why; device safe: steps "
        "the device took with its safe action; gaps: OBS the daemon took as following a lost one; explored: random "
        "actions the daemon sent; CPU s/1k: the daemon's whole life per 1,000 answered OBS)"
    )
    rows = []
    order = list(SCENARIOS)
    for r in sorted(runs, key=lambda r: (order.index(r["scenario"]), MODES.index(r["mode"]), r["seed"])):
        sm = r.get("summary", {})
        gate = sm.get("gate", {})
        fallbacks = ", ".join(f"{k} {v}" for k, v in sm.get("fallbacks", {}).items())
        rows.append(
            [
                r["scenario"],
                r["mode"],
                r["seed"],
                r["wall_s"],
                f"{r.get('daemon_rc')}/{r.get('device_rc')}",
                sm.get("steps", "?"),
                f"{sm.get('safe_actions', '?')}" + (f" ({fallbacks})" if fallbacks else ""),
                r.get("device_table", {}).get("safe-action steps", "?"),
                sm.get("gaps", "?"),
                sm.get("late", "?"),
                sm.get("explored", "?"),
                sm.get("latency_p50_us", math.nan),
                sm.get("latency_p99_us", math.nan),
                1000 * r.get("cpu_s", math.nan) / max(sm.get("steps", 1), 1),
                "/".join(str(gate.get(k, 0)) for k in ("trials", "promotions", "rollbacks", "drift_alarms")),
                r.get("error", ""),
            ]
        )
    header = ["scenario", "adapt", "seed", "wall s", "exits", "answered", "daemon safe", "device safe", "gaps", "late"]
    header += ["explored", "p50 us", "p99 us", "CPU s/1k", "trials/promoted/rollbacks/alarms", "error"]
    print_table(header, rows)


def plot(summary: dict[str, Any], runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = [p for p in ("antijam", "hover", "poison") if p in summary]
    if not panels:
        return
    axis = np.arange(1, args.adapt_steps // WINDOW + 1) * WINDOW
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.0), squeeze=False)
    markers = {"candidate_promoted": ":", "rollback": "--", "drift_alarm": "-."}
    seed0 = min(args.seeds)
    titles = {
        "antijam": f"AntiJam: jammer sweeping -> reactive at {args.switch:,}",
        "hover": f"Hover: battery_sag 0 -> 0.3 at {args.switch:,}",
        "poison": f"AntiJam, reported reward x -1 at {args.poison:,}-{args.poison + args.poison_len:,}",
    }
    for ax, name in zip(axes[0], panels, strict=True):
        curves = dict(summary[name]["curves"])
        if name == "poison":  # frozen policies do not learn: B1's runs are theirs
            frozen = {m: c for m, c in summary.get("antijam", {}).get("curves", {}).items() if m in ("policy", "off")}
            curves = {**frozen, **curves}
        for mode, c in curves.items():
            color, style = COLOR.get(mode, "tab:red"), "--" if "no gate" in mode else ":" if mode == "policy" else "-"
            for values in c["per_seed"]:
                ax.plot(axis, values, color=color, linewidth=0.6, alpha=0.3, linestyle=style)
            label = LABEL.get(mode, mode) + (" (B1's runs)" if name == "poison" and mode in ("off", "policy") else "")
            ax.plot(axis, c["mean"], color=color, linewidth=2, label=label, linestyle=style)
        for r in runs:
            if r["scenario"] == name and r["seed"] == seed0 and r["mode"] in ("head", "full"):
                for e in r.get("events", []):
                    if e["kind"] in markers and e.get("env_step") is not None:
                        style = markers[e["kind"]]
                        ax.axvline(e["env_step"], color=COLOR[r["mode"]], linestyle=style, linewidth=0.8, alpha=0.7)
        ax.axvspan(args.switch - WINDOW / 10, args.switch + WINDOW / 10, color="black", alpha=0.25)
        if name == "poison":
            ax.axvspan(args.poison, args.poison + args.poison_len, color="red", alpha=0.15)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("env step (end of each 1,000-step window)")
        ax.set_ylabel(
            "true success rate" if SCENARIOS[name]["metric"] == "success_rate" else "true mean reward per step"
        )
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="black", linestyle=s, linewidth=0.8) for s in markers.values()]
        labels += [f"{k.removeprefix('candidate_')} (seed {seed0}, colour of its mode)" for k in markers]
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------------
def code_state() -> dict[str, Any]:
    """The commit measured and the files that differed from it (the daemon and the simulator may be in flux)."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    import hashlib

    diff = git("diff", "HEAD", "--", "edge_rl", "firmware_bridge")
    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": git("status", "--short").splitlines(),
        "trees": git("rev-parse", "HEAD:edge_rl", "HEAD:firmware_bridge").split(),  # what runs, committed
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest(),  # and its uncommitted changes
    }


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def part_b(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    scenarios = args.scenarios
    if "poison" in scenarios and not args.switch < args.poison < args.poison + args.poison_len < args.adapt_steps:
        raise SystemExit("need --switch < --poison < --poison + --poison-len < --adapt-steps")
    if any(s in scenarios for s in ("antijam", "poison")):
        antijam_bundle()
    if "hover" in scenarios:
        hover_bundle()
    jobs = [(s, m, seed) for seed in args.seeds for s in scenarios for m in SCENARIOS[s]["modes"]]
    local = [("policy", s, seed) for s in scenarios if s != "poison" for seed in args.seeds]
    if "poison" in scenarios and args.ungated:
        local += [(m, "poison", seed) for m in ("head", "full") for seed in args.seeds]
    runs: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {}
        for s, m, seed in jobs:
            directory = WORK / "runs" / f"{s}-{m}-seed{seed}"
            futures[pool.submit(adaptation_run, s, m, seed, args.adapt_steps, device_shifts(s, args), directory)] = (
                s,
                m,
                seed,
                True,
            )
        for m, s, seed in local:
            future = pool.submit(in_process_run, s, m, seed, args.adapt_steps, device_shifts(s, args))
            futures[future] = (s, "policy" if m == "policy" else f"{m}, no gate", seed, False)
        for done, future in enumerate(as_completed(futures), 1):
            scenario, mode, seed, daemon = futures[future]
            where = f"[{done}/{len(futures)}] {scenario} {mode} seed {seed}"
            try:
                r = future.result()
            except Exception as exc:
                print(f"{where}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                continue
            key = SCENARIOS[scenario]["metric"]
            values = [w[key] for w in r["windows"] if w.get(key) is not None]
            level = f"last 5k {key} {np.mean(values[-5:]):.3f}" if values else "no windows"
            if daemon:
                runs.append(r)
                sm = r.get("summary", {})
                line = f"{where}: {r['wall_s']:.0f} s, exits daemon {r.get('daemon_rc')} device {r.get('device_rc')}, "
                line += f"{sm.get('steps', '?')} OBS answered, {level}" + (
                    f", ERROR {r['error']}" if "error" in r else ""
                )
            else:
                references.append(r)
                line = f"{where}: {r['wall_s']:.0f} s in process, {level}"
            print(line, file=sys.stderr, flush=True)
    return summarize(runs + references, args), runs, references


def summarize(everything: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    axis = np.arange(1, args.adapt_steps // WINDOW + 1) * WINDOW
    summary: dict[str, Any] = {}
    if "antijam" in args.scenarios:
        summary["antijam"] = summarize_antijam(everything, args, axis)
    if "hover" in args.scenarios:
        summary["hover"] = summarize_hover(everything, args, axis)
    if "poison" in args.scenarios:
        summary["poison"] = summarize_poison(everything, args, axis)
    return summary


def summarize_only(path: Path) -> None:
    """Tables, plot and summaries again from a saved daemon.json (its runs as they were recorded)."""
    result = json.loads(path.read_text())
    saved = argparse.Namespace(**result["args"])
    if "part_a" in result:
        print_part_a(result["part_a"])
    if "part_b" in result:
        part = result["part_b"]
        for r in part["runs"]:
            digest = r.get("bundle_digest") or bundle_digest(SCENARIOS[r["scenario"]]["bundle"])
            r["bundle_digest"], r["alarm_checks"] = digest, alarm_checks(r.get("events", []), digest)
        part["summary"] = summarize(part["runs"] + part["in_process"], saved)
        print_part_b(part["summary"], part["runs"], saved)
        plot(part["summary"], part["runs"], saved, RESULTS / "daemon.png")
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nrewrote {path.relative_to(ROOT)} and daemon.png from the recorded runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b", help="a: the control loop's cost, b: adaptation (default: a,b)")
    parser.add_argument("--steps", type=int, default=5000, help="part A: answered OBS per run (default: 5000)")
    parser.add_argument("--period-ms", type=int, default=1, help="part A: the device's period in ms (default: 1)")
    parser.add_argument(
        "--devices", default="c,python", help="part A: c (the C simulator), python (edge-rl device) (default: c,python)"
    )
    parser.add_argument("--adapt-steps", type=int, default=40_000, help="part B: env steps per run (default: 40000)")
    parser.add_argument("--switch", type=int, default=5000, help="part B: env step of the shift (default: 5000)")
    parser.add_argument("--poison", type=int, default=25_000, help="part B: first poisoned step (default: 25000)")
    parser.add_argument("--poison-len", type=int, default=2000, help="part B: poisoned steps (default: 2000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="part B seeds (default: 0 1 2)")
    parser.add_argument(
        "--scenarios", default="antijam,hover,poison", help="part B scenarios (default: antijam,hover,poison)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="part B: runs at once, 3 processes each (default: 2)")
    parser.add_argument(
        "--no-ungated",
        dest="ungated",
        action="store_false",
        help="part B: skip the in-process learners without a gate on the poisoned device",
    )
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="no runs: the tables, summaries and plot again from benchmarks/results/daemon.json",
    )
    args = parser.parse_args()
    if args.summarize_only:
        return summarize_only(RESULTS / "daemon.json")
    args.parts = [p for p in args.parts.split(",") if p]
    args.devices = [d for d in args.devices.split(",") if d]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS)) + sorted(set(args.devices) - {"c", "python"})
    if unknown or not set(args.parts) <= {"a", "b"}:
        parser.error(f"unknown part, device or scenario: {unknown or args.parts}")
    if shutil.which("socat") is None:
        raise SystemExit("socat is missing: run .ci/system-deps")
    started = time.monotonic()
    out_json = RESULTS / "daemon.json"
    result = json.loads(out_json.read_text()) if out_json.exists() else {}  # a part not run keeps its last result
    result.update(args=vars(args), code=code_state(), load_before=load())
    if "a" in args.parts:
        result["part_a"] = part_a(args)
    if "b" in args.parts:
        summary, runs, references = part_b(args)
        result["part_b"] = {"summary": summary, "runs": runs, "in_process": references}
    result.update(wall_s=time.monotonic() - started, load_after=load(), code_after=code_state())
    changed = {k for k in ("trees", "diff_sha1") if result["code"][k] != result["code_after"][k]}
    if "a" in args.parts:
        print_part_a(result["part_a"])
    if "b" in args.parts:
        print_part_b(result["part_b"]["summary"], result["part_b"]["runs"], args)
        plot(result["part_b"]["summary"], result["part_b"]["runs"], args, RESULTS / "daemon.png")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    written = "daemon.json" + (" and daemon.png" if "b" in args.parts else "")
    if changed:
        print(
            f"\nWARNING: edge_rl/ or firmware_bridge/ changed while this ran ({', '.join(sorted(changed))}): "
            "the runs may not all have measured the same code"
        )
    print(
        f"\nwrote benchmarks/results/{written} in {result['wall_s'] / 60:.1f} min "
        f"(load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f})"
    )


if __name__ == "__main__":
    main()
