"""Stream Q(lambda) per-step cost: the numpy learner against the torch implementation of the same spec.

CartPole-v1 under the reference protocol (limit 10,000, raw time feature), 5->32->32->2 network,
same seeds, one thread. Each learner runs in its own process (the numpy one never imports
torch, as on a device) on its own env; the two take turns in chunks of `--chunk` steps, so the
load other tenants put on this machine (which moves medians by 2x within minutes) hits both
alike, while neither shares an interpreter, heap or caches with the other's framework.
Reported: per-step act+observe microseconds (median, p99; env.step excluded), their ratio per
seed, steps/s over the timed chunks (env included) and each process's peak RSS (VmHWM). A long
run of the numpy learner alone samples RSS every 100k steps to show memory stays flat.

    python benchmarks/stream_q.py                       # 20k steps x seeds 0-2 each, 1M-step memory run
    python benchmarks/stream_q.py --steps 5000 --long 200000

Writes benchmarks/results/stream_q.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

# A learner in its own process: "N" on stdin runs N more steps and answers "ok"; "end" prints the summary.
WORKER = r"""
import json, sys, time
import numpy as np
import gymnasium as gym

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

impl, seed, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if impl == "torch":
    from edge_rl.train.stream_torch import TorchStreamQ as Learner
else:
    from edge_rl.stream import StreamQ as Learner
from edge_rl.stream.simulate import CARTPOLE_LIMIT

learner = Learner(5, 2, raw_tail=1, seed=seed)
env = gym.make("CartPole-v1", max_episode_steps=CARTPOLE_LIMIT)
obs, _ = env.reset(seed=seed)
t, x = 0, np.append(obs, -0.5)
times, rss, wall, done_steps = [], [], 0.0, 0
print("ready", flush=True)
for command in sys.stdin:
    if command.strip() == "end":
        break
    n = int(command)
    chunk = np.empty(n)  # preallocated: a growing list would itself look like a leak
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        action = learner.act(x)
        t1 = time.perf_counter()
        obs, reward, terminated, truncated, _ = env.step(action)
        t += 1
        nx = np.append(obs, t / CARTPOLE_LIMIT - 0.5)
        t2 = time.perf_counter()
        learner.observe(float(reward), nx, terminated, truncated)
        chunk[i] = (t1 - t0) + (time.perf_counter() - t2)
        if terminated or truncated:
            obs, _ = env.reset()
            t, nx = 0, np.append(obs, -0.5)
        x = nx
        done_steps += 1
        if done_steps % every == 0:
            rss.append(rss_mb("VmRSS:"))
    wall += time.perf_counter() - start
    times.append(chunk)
    print("ok", flush=True)
all_times = np.sort(np.concatenate(times))
print(json.dumps({"median_us": float(all_times[len(all_times) // 2]) * 1e6,
                  "p99_us": float(all_times[int(0.99 * len(all_times))]) * 1e6,
                  "steps_per_s": done_steps / wall, "peak_rss_mb": rss_mb("VmHWM:"), "rss_mb": rss,
                  "torch_imported": "torch" in sys.modules}), flush=True)
"""


def start(impl: str, seed: int, every: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", WORKER, impl, str(seed), str(every)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{impl} worker failed to start")
    return proc


def command(proc: subprocess.Popen, text: str) -> str:
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("a worker died")
    return line


def turns(seed: int, steps: int, chunk: int) -> dict[str, dict]:
    """Both learners in their own processes, taking turns `chunk` steps at a time (see the docstring)."""
    workers = {impl: start(impl, seed, steps) for impl in ("numpy", "torch")}
    for _ in range(steps // chunk):
        for proc in workers.values():
            command(proc, str(chunk))
    out = {impl: json.loads(command(proc, "end")) for impl, proc in workers.items()}
    for proc in workers.values():
        proc.wait(timeout=60)
    return out


def alone(steps: int, every: int) -> dict:
    proc = start("numpy", 0, every)
    command(proc, str(steps))
    result = json.loads(command(proc, "end"))
    proc.wait(timeout=60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per learner and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chunk", type=int, default=1000, help="steps each learner runs before the other takes over")
    parser.add_argument("--long", type=int, default=1_000_000, help="steps of the numpy memory run (0: skip)")
    args = parser.parse_args()
    from edge_rl.table import print_table

    rows = []
    for seed in args.seeds:
        timing = turns(seed, args.steps, args.chunk)
        rows += [{"impl": impl, "seed": seed, **timing[impl]} for impl in ("numpy", "torch")]
    if any(r["torch_imported"] for r in rows if r["impl"] == "numpy"):
        raise SystemExit("the numpy learner's process imported torch")
    summary = {
        impl: {
            k: statistics.median(r[k] for r in rows if r["impl"] == impl)
            for k in ("median_us", "p99_us", "steps_per_s", "peak_rss_mb")
        }
        for impl in ("numpy", "torch")
    }
    ratios = [t["median_us"] / n["median_us"] for n, t in zip(rows[0::2], rows[1::2], strict=True)]
    print_table(
        ["learner", "act+learn median us", "p99 us", "steps/s (env included)", "peak RSS MB"],
        [[k, v["median_us"], v["p99_us"], v["steps_per_s"], v["peak_rss_mb"]] for k, v in summary.items()],
    )
    print(
        f"numpy is {statistics.median(ratios):.1f}x faster per step than torch "
        f"(median over seeds {args.seeds}; per seed {', '.join(f'{r:.1f}' for r in ratios)})"
    )
    long_run = None
    if args.long:
        long_run = alone(args.long, 100_000)
        print(
            f"numpy learner, {args.long:,} steps: RSS every 100k steps {[round(m, 1) for m in long_run['rss_mb']]} MB"
        )
    out = RESULTS / "stream_q.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "steps": args.steps,
                "chunk": args.chunk,
                "runs": rows,
                "summary": summary,
                "ratios": ratios,
                "ratio": statistics.median(ratios),
                "long": long_run,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
