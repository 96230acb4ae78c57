"""What telemetry costs the daemon: CPU time of `edge-rl run` at 100 steps/s with telemetry off and on.

Each run is real processes: `edge-rl device edge_rl/AntiJam-v0 --period-ms 10` on one end of a socat
pty pair, `edge-rl run BUNDLE --adapt head` on the other, Mosquitto (tests/mosquitto.py) on a free
loopback port and, in the `on + monitor` runs, `edge-rl monitor` subscribed to the fleet. After a
warm-up, the daemon's CPU time (utime + stime from /proc/<pid>/stat, all its threads) is read over a
fixed window; the monitor's too, reported on its own line (it runs on the operator's machine, not
the device). Configurations alternate within each repetition, so drift on a noisy machine hits them
alike; the table shows medians and the ratio to `off`. The bar: telemetry adds <= 5 % at 100 steps/s.

    python benchmarks/telemetry.py                  # 3 repetitions x 30 s windows, ~6 min
    python benchmarks/telemetry.py --reps 1 --window 10

Writes benchmarks/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
EDGE_RL = [sys.executable, "-m", "edge_rl.cli"]
CONFIGS = ("off", "on", "on + monitor")


def cpu_seconds(pid: int, thread: str | None = None) -> float:
    """CPU time of a process's threads (all, or those named `thread`), from schedstat: nanoseconds, not ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if thread is None or (task / "comm").read_text().strip() == thread:
                total += int((task / "schedstat").read_text().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def one_run(config: str, bundle: Path, broker_url: str, work: Path, warmup: float, window: float) -> dict[str, float]:
    from tests.ptys import SocatPair

    pair = SocatPair(work)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": ROOT}
    device = subprocess.Popen(
        [*EDGE_RL, "device", "edge_rl/AntiJam-v0", "--link", f"serial://{pair.b}", "--period-ms", "10"], **quiet
    )
    run = [*EDGE_RL, "run", str(bundle), "--link", f"serial://{pair.a}", "--adapt", "head", "--device-id", "bench-1"]
    if config != "off":
        run += ["--telemetry", broker_url, "--state-dir", str(work / f"state-{time.monotonic_ns()}")]
    daemon = subprocess.Popen([*run, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True)
    started = time.monotonic()
    monitor = None
    if config == "on + monitor":
        monitor = subprocess.Popen(
            [*EDGE_RL, "monitor", broker_url, "--duration", str(warmup + window + 5), "--once"], **quiet
        )
    try:
        time.sleep(warmup)
        start = {p.pid: cpu_seconds(p.pid) for p in (daemon, monitor) if p is not None}
        thread_start = cpu_seconds(daemon.pid, "edgerl-telemetr")  # comm keeps 15 characters
        time.sleep(window)
        used = {pid: cpu_seconds(pid) - t for pid, t in start.items()}
        thread = cpu_seconds(daemon.pid, "edgerl-telemetr") - thread_start
        assert daemon.poll() is None, "the daemon exited during the window"
    finally:
        for p in (daemon, device, monitor):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (device, monitor):
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        out, _ = daemon.communicate(timeout=30)
        lifetime = time.monotonic() - started
        pair.close()
    loop_ms = json.loads(out[out.index("{") :])["telemetry_loop_ms"]
    return {
        "daemon_cpu_ms_per_s": 1000 * used[daemon.pid] / window,
        "monitor_cpu_ms_per_s": 1000 * used[monitor.pid] / window if monitor is not None else float("nan"),
        "telemetry_thread_cpu_ms_per_s": 1000 * thread / window,
        "telemetry_loop_ms_per_s": loop_ms / lifetime,  # the loop's share: handing samples and events over
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every configuration (default: 3)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of CPU time measured (default: 30)")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before the window (default: 4)")
    args = parser.parse_args()

    from tests.daemon_rig import antijam_policy, write_bundle
    from tests.mosquitto import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="edgerl-bench-telemetry-"))
    bundle = write_bundle(antijam_policy(0), work / "bundle", 1)
    broker = Mosquitto().start()
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    try:
        for rep in range(args.reps):
            for config in CONFIGS:
                print(f"rep {rep + 1}/{args.reps}: telemetry {config} ({args.warmup + args.window:.0f} s)", flush=True)
                runs[config].append(one_run(config, bundle, broker.url, work, args.warmup, args.window))
    finally:
        broker.cleanup()
    report(runs, args)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians per configuration; telemetry's cost both as attributed (its thread + the loop's handing over)
    and as the difference of whole-daemon CPU against `off` (the honest total, but noisy on a shared box)."""
    from edge_rl.table import print_table

    def median(config: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[config])

    base = median("off", "daemon_cpu_ms_per_s")
    rows, out = [], {"settings": vars(args), "configs": {}}
    for config in CONFIGS:
        daemon = median(config, "daemon_cpu_ms_per_s")
        attributed = median(config, "telemetry_thread_cpu_ms_per_s") + median(config, "telemetry_loop_ms_per_s")
        monitor = median(config, "monitor_cpu_ms_per_s")
        out["configs"][config] = {
            "runs": runs[config],
            "daemon_cpu_ms_per_s": daemon,
            "added_total": daemon / base - 1,
            "added_attributed": attributed / base,
        }
        shown_monitor = "" if monitor != monitor else round(monitor, 2)
        row = [config, round(daemon, 2), f"{100 * (daemon / base - 1):+.1f} %", round(attributed, 3)]
        rows.append([*row, f"{100 * attributed / base:.1f} %", shown_monitor])
    print()
    header = ["telemetry", "daemon CPU ms/s", "total vs off", "telemetry ms/s", "telemetry / off", "monitor ms/s"]
    print_table(header, rows)
    c = out["configs"]["on + monitor"]
    print(
        f"\ntelemetry costs the daemon {100 * c['added_attributed']:.1f} % of its CPU time at 100 steps/s (its thread "
        f"and the loop's handing over; whole-daemon difference {100 * c['added_total']:+.1f} %; bar: <= 5 %; "
        f"medians of {args.reps} x {args.window:g} s)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "telemetry.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
